"""A device belongs to one user, and its acks count only for what it was sent, over real gRPC.
Ownership runs on memory and on a real Redis and Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import edge_pb2, message_pb2, push_pb2

from pushplat.auth import mint_token
from tests.helpers import RawDevice, eventually

SECRET = "device-tests-secret-0123456789abcdef0123"
ALO = message_pb2.AT_LEAST_ONCE
State = push_pb2.DeliveryState


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def refused_hello(platform, token: str) -> grpc.aio.AioRpcError:
    device = RawDevice(addr(platform.ports.edge))
    try:
        await device.call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(token=token)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await device.call.read()
        return info.value
    finally:
        await device.close()


async def handled(device: RawDevice) -> None:
    """Wait until the edge has handled every frame the device wrote: it reads them in order, so
    the Pong for a Ping written last comes after all of them."""
    await device.call.write(edge_pb2.ClientFrame(ping=edge_pb2.Ping()))
    async with asyncio.timeout(10):
        while True:
            frame = await device.call.read()
            assert frame is not grpc.aio.EOF, "the stream ended"
            assert not frame.HasField("pushes"), "nothing was sent to this device meanwhile"
            if frame.HasField("pong"):
                return


async def status(api, message_id: str) -> push_pb2.GetStatusResponse:
    return await api.stub.GetStatus(push_pb2.GetStatusRequest(message_id=message_id), timeout=5)


async def test_another_user_can_neither_take_a_device_nor_read_its_inbox(start_platform, clients, registry_url):
    platform = await start_platform(auth_secret=SECRET, registry=registry_url)
    api = clients("api", addr(platform.ports.api))
    alice_token = mint_token(SECRET, "alice", "alice-phone")
    mallory_token = mint_token(SECRET, "mallory", "alice-phone")

    # Alice's phone connects once (it is hers from now on), then goes offline with mail waiting.
    phone = clients("device", addr(platform.ports.edge))
    await phone.hello(token=alice_token)
    await phone.close()
    waiting = await api.send(user_id="alice", payload=b"for alice only", delivery=ALO)

    # Mallory holds a valid token that names alice's device: refused, and nothing is replayed.
    denied = await refused_hello(platform, mallory_token)
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'alice-phone' belongs to another user" in denied.details()

    # Alice gets her message; while she is connected, mallory's Hello neither replaces her
    # session nor reaches her stream.
    phone = clients("device", addr(platform.ports.edge))
    await phone.hello(token=alice_token)
    [replayed] = await phone.read_messages(1)
    assert replayed.message_id == waiting.message_id
    for _ in range(3):
        assert (await refused_hello(platform, mallory_token)).code() == grpc.StatusCode.PERMISSION_DENIED
    live = await api.send(device_id="alice-phone", payload=b"still alice's")
    [got] = await phone.read_messages(1)
    assert got.message_id == live.message_id, "alice's stream got no GoAway and stays hers"
    presence = await api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="mallory"), timeout=5)
    assert list(presence.devices) == []
    # Mallory was never enrolled with the device: a message to mallory does not land in it.
    await api.send(user_id="mallory", payload=b"for mallory", delivery=ALO)
    marker = await api.send(device_id="alice-phone", payload=b"marker")
    [next_message] = await phone.read_messages(1)
    assert next_message.message_id == marker.message_id
    counted = REGISTRY.get_sample_value("pushplat_connects_total", {"result": "device_owned", "transport": "grpc"})
    assert counted and counted >= 4


async def test_a_device_id_is_free_again_once_forgotten(start_platform, clients):
    platform = await start_platform(auth_secret=SECRET, device_memory_seconds=0.5)
    first = clients("device", addr(platform.ports.edge))
    await first.hello(token=mint_token(SECRET, "bob", "shared-tablet"))
    await first.close()
    assert (await refused_hello(platform, mint_token(SECRET, "carol", "shared-tablet"))).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )

    # Nobody connects with it for the memory window: then carol may bind it.
    async def carol_binds() -> bool:
        device = clients("device", addr(platform.ports.edge))
        try:
            await device.hello(token=mint_token(SECRET, "carol", "shared-tablet"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            return False
        return True

    await eventually(carol_binds, timeout=5, what="bob's 0.5 s binding to lapse")
    assert (await refused_hello(platform, mint_token(SECRET, "bob", "shared-tablet"))).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    ), "now it is carol's"


async def test_acks_count_only_for_messages_sent_to_that_device(platform, clients):
    api = clients("api", addr(platform.ports.api))
    target = clients("device", addr(platform.ports.edge))
    await target.hello(user_id="tess", device_id="tess-phone")
    other = clients("device", addr(platform.ports.edge))
    await other.hello(user_id="oscar", device_id="oscar-phone")
    sent = await api.send(device_id="tess-phone", payload=b"x", delivery=ALO)
    [message] = await target.read_messages(1, ack=False)

    # Oscar acks tess's message (its id is no secret): nothing changes.
    await other.call.write(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[sent.message_id])))
    await handled(other)
    reply = await status(api, sent.message_id)
    assert [(d.device_id, d.state) for d in reply.devices] == [("tess-phone", State.DELIVERY_STATE_DELIVERED_TO_EDGE)]

    # Tess reconnects without acking: the message is still in her inbox and is replayed.
    await target.close()
    target = clients("device", addr(platform.ports.edge))
    await target.hello(user_id="tess", device_id="tess-phone")
    [again] = await target.read_messages(1)  # acks it this time
    assert again.message_id == message.message_id

    async def acked() -> bool:
        reply = await status(api, sent.message_id)
        return [(d.device_id, d.state) for d in reply.devices] == [("tess-phone", State.DELIVERY_STATE_ACKED)]

    await eventually(acked, what="tess's own ack")
    assert (await platform.inbox.pending("tess-phone")) == [], "her ack took it out of the inbox"


async def test_random_acks_never_evict_a_real_message_status(platform, clients):
    api = clients("api", addr(platform.ports.api))
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="flooder")
    real = await api.send(device_id="flooder", payload=b"real")
    [message] = await device.read_messages(1)  # acked: its status reads ACKED
    acks_before = REGISTRY.get_sample_value("pushplat_acks_total") or 0.0

    # 30,000 acks of ids never sent to it, in frames the edge accepts.
    for _ in range(30):
        ids = [str(uuid.uuid4()) for _i in range(1_000)]
        await device.call.write(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=ids)))
    await handled(device)
    probe = await api.send(device_id="flooder", payload=b"after the flood")
    [after] = await device.read_messages(1)
    assert after.message_id == probe.message_id, "the stream carried on"

    reply = await status(api, real.message_id)
    assert reply.message_id == message.message_id
    assert [(d.device_id, d.state) for d in reply.devices] == [("flooder", State.DELIVERY_STATE_ACKED)]
    # Only the two real messages were counted as acked.
    assert (REGISTRY.get_sample_value("pushplat_acks_total") or 0.0) - acks_before <= 2
    for event in platform.receipts.events:
        if event.state == State.DELIVERY_STATE_ACKED:
            assert event.message_id in (real.message_id, probe.message_id), "an ack receipt for an id never sent"
