"""The Python SDK against the real platform: the edge dies, comes back, and the client carries on."""

from __future__ import annotations

import asyncio

from pushplat_client import Backoff, PushClient, PushSender

from tests.processes import ProcessGroup


async def next_message(client: PushClient, timeout: float = 15):
    return await asyncio.wait_for(anext(aiter(client)), timeout)


async def send_until_received(sender: PushSender, client: PushClient, payload: bytes, timeout: float = 30):
    """At-most-once sends are dropped while the device is between connections: retry until one lands."""

    async def loop():
        while True:
            sent = await sender.send(device_id="phone", payload=payload)
            try:
                message = await asyncio.wait_for(anext(aiter(client)), 0.5)
            except TimeoutError:
                continue
            return sent, message

    return await asyncio.wait_for(loop(), timeout)


async def test_client_carries_on_after_the_edge_is_killed_and_restarted(processes: ProcessGroup):
    server = await processes.dev("--heartbeat-interval-ms", "1000")
    async with PushClient(server.edge, user_id="pat", device_id="phone", backoff=Backoff(base=0.05, cap=0.5)) as client:
        await client.wait_connected(timeout=10)
        first_session = client.session_id
        async with PushSender(server.api) as sender:
            sent = await sender.send(device_id="phone", payload=b"before")
            message = await next_message(client)
            assert message.message_id == sent.message_id and message.payload == b"before"

        await server.restart()  # kill -9, then the same ports again

        async with PushSender(server.api) as sender:
            sent, message = await send_until_received(sender, client, b"after")
        assert message.payload == b"after"
        assert client.connects >= 2 and client.session_id != first_session
