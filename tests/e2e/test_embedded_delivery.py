"""The embedded platform end to end over real gRPC on loopback: fan-out, ordering, priorities."""

from __future__ import annotations

from pushplat_client.v1 import message_pb2

from tests.helpers import eventually


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def test_send_to_user_reaches_every_device_and_to_device_only_that_one(platform, clients):
    devices = [clients("device", addr(platform.ports.edge)) for _ in range(3)]
    for i, device in enumerate(devices):
        welcome = await device.hello(user_id="alice", device_id=f"alice-{i}")
        assert welcome.session_id and welcome.edge_id == platform.config.edge_id
    other = clients("device", addr(platform.ports.edge))
    await other.hello(user_id="bob", device_id="bob-0")
    api = clients("api", addr(platform.ports.api))

    sent = await api.send(user_id="alice", payload=b"to all of alice")
    for device in devices:
        [message] = await device.read_messages(1)
        assert message.message_id == sent.message_id
        assert message.payload == b"to all of alice"
        assert message.priority == message_pb2.PRIORITY_NORMAL
        assert message.created_at_ms > 0

    only = await api.send(device_id="alice-1", payload=b"just one")
    [message] = await devices[1].read_messages(1)
    assert message.message_id == only.message_id
    # The other devices get nothing more: a following user-wide send is the next thing they see.
    marker = await api.send(user_id="alice", payload=b"marker")
    for i in (0, 2):
        [message] = await devices[i].read_messages(1)
        assert message.message_id == marker.message_id
    # bob never saw alice's messages: his first message is his own.
    mine = await api.send(user_id="bob", payload=b"bob's")
    [message] = await other.read_messages(1)
    assert message.message_id == mine.message_id


async def test_messages_to_one_device_arrive_in_send_order(platform, clients):
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    api = clients("api", addr(platform.ports.api))
    ids = [(await api.send(device_id="d", payload=str(i).encode())).message_id for i in range(300)]
    received = await device.read_messages(300)
    assert [m.message_id for m in received] == ids


async def test_high_overtakes_a_low_backlog_in_the_session_queue(start_platform, clients):
    # Large limits so the slow device's backlog is kept, not dropped, and it is not disconnected.
    platform = await start_platform(
        session_queue_limit=20_000, session_queue_bytes=64 * 1024 * 1024, slow_consumer_seconds=600
    )
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="slow", device_id="slow-1")
    api = clients("api", addr(platform.ports.api))
    payload = b"x" * 8192  # 24 MB in all: far more than the stream's flow-control window
    # The device does not read, so flow control stops the stream and the backlog piles up
    # in the session's outbound queue.
    # Sequential sends: order is promised per device for sends that follow one another.
    low_ids = [
        (await api.send(device_id="slow-1", payload=payload, priority=message_pb2.PRIORITY_LOW)).message_id
        for _ in range(3000)
    ]
    session = platform.edge.hub.get("slow-1")
    await eventually(lambda: len(session.outbound) > 2000, what="a low backlog in the session queue")
    high = await api.send(device_id="slow-1", payload=b"urgent", priority=message_pb2.PRIORITY_HIGH)
    # The writer is stuck on flow control, so the high message waits in the queue too.
    await eventually(lambda: session.outbound.depth("high") == 1, what="the high message at the edge")

    still_queued = session.outbound.depth("low")
    assert still_queued > 2000

    received = await device.read_messages(3001, timeout=60)
    position = [m.message_id for m in received].index(high.message_id)
    # Only what had already left the queue (into the flow-control window) may precede it;
    # every one of the `still_queued` low messages comes after.
    assert position <= 3000 - still_queued, f"high arrived at {position}; {still_queued} lows were queued"
    lows = [m.message_id for m in received if m.message_id != high.message_id]
    assert lows == low_ids, "low messages kept their order"


async def test_high_overtakes_a_low_backlog_in_the_router(platform, clients):
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    api = clients("api", addr(platform.ports.api))
    await platform.router.pause()
    low_ids = [
        (await api.send(device_id="d", payload=b"bulk", priority=message_pb2.PRIORITY_LOW)).message_id
        for _ in range(3000)
    ]
    normal = await api.send(device_id="d", payload=b"normal", priority=message_pb2.PRIORITY_NORMAL)
    high = await api.send(device_id="d", payload=b"urgent", priority=message_pb2.PRIORITY_HIGH)
    platform.router.resume()

    received = [m.message_id for m in await device.read_messages(3002, timeout=60)]
    assert received.index(high.message_id) == 0, "high goes out ahead of the whole low backlog"
    assert received.index(normal.message_id) < 50
    assert [i for i in received if i in set(low_ids)] == low_ids
