"""api, routers and edges as separate OS processes on real Redis and Kafka."""

from __future__ import annotations

import collections

import pytest
from pushplat_client import Backoff, PushClient, PushSender

from tests.helpers import Inbox, eventually

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


async def test_devices_on_either_edge_and_a_user_spread_over_both_get_their_messages(deployment):
    api, _routers, (edge_a, edge_b) = await deployment.platform(routers=2, edges=2)
    clients = {
        "a1": PushClient(edge_a.address, user_id="ua", device_id="a1"),
        "b1": PushClient(edge_b.address, user_id="ub", device_id="b1"),
        "phone": PushClient(edge_a.address, user_id="sam", device_id="phone"),
        "laptop": PushClient(edge_b.address, user_id="sam", device_id="laptop"),
    }
    inbox = Inbox()
    try:
        for name, client in clients.items():
            await inbox.connect(name, client, timeout=15)
        assert clients["phone"].edge_id != clients["laptop"].edge_id
        async with PushSender(api.address) as sender:
            await sender.send(device_id="a1", payload="to a1")
            await sender.send(user_id="ub", payload="to ub")
            await sender.send(user_id="sam", payload="to sam")
        await eventually(lambda: all(inbox.seen[n] for n in clients), 30, what="every device's message")
        assert dict(inbox.seen) == {"a1": ["to a1"], "b1": ["to ub"], "phone": ["to sam"], "laptop": ["to sam"]}
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()


async def test_killing_a_router_loses_nothing(deployment):
    api, routers, edges = await deployment.platform(routers=2, edges=2)
    clients = {
        f"d{i}": PushClient(
            edges[i % 2].address, user_id=f"u{i}", device_id=f"d{i}", backoff=Backoff(base=0.05, cap=1.0)
        )
        for i in range(10)
    }
    inbox = Inbox()
    try:
        for name, client in clients.items():
            await inbox.connect(name, client, timeout=15)
        expected: dict[str, list[str]] = collections.defaultdict(list)
        async with PushSender(api.address) as sender:
            for i in range(400):
                device = f"d{i % 10}"
                await sender.send(device_id=device, payload=f"m{i}")
                expected[device].append(f"m{i}")
                if i == 150:
                    await routers[0].kill()  # kill -9: no chance to commit or leave the group
        total = sum(len(v) for v in expected.values())

        def all_there() -> bool:
            return sum(len(set(v)) for v in inbox.seen.values()) >= total

        await eventually(all_there, 90, what="every message after the router died")
        for device, messages in expected.items():
            assert sorted(inbox.seen[device], key=lambda p: int(p[1:])) == messages, device
            assert len(inbox.seen[device]) == len(set(inbox.seen[device])), f"duplicates reached the app on {device}"
        print(f"router killed mid-stream: {total} of {total} messages reached the applications once", flush=True)
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()
