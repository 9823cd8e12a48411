"""Delivery guarantees on the embedded platform: inbox, replay, TTL, collapse, idempotency, receipts."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import message_pb2, push_pb2

from pushplat.messages import now_ms
from tests.helpers import eventually

ALO = message_pb2.AT_LEAST_ONCE
State = push_pb2.DeliveryState


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def connect(clients, platform, device_id: str, user_id: str = ""):
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id=user_id or device_id, device_id=device_id)
    return device


async def status(api, message_id: str) -> push_pb2.GetStatusResponse:
    return await api.stub.GetStatus(push_pb2.GetStatusRequest(message_id=message_id), timeout=5)


async def device_state(api, message_id: str, device_id: str) -> int:
    for device in (await status(api, message_id)).devices:
        if device.device_id == device_id:
            return device.state
    return State.DELIVERY_STATE_UNSPECIFIED


async def test_offline_device_gets_at_least_once_messages_when_it_connects(platform, clients):
    api = clients("api", addr(platform.ports.api))
    sent = [await api.send(device_id="tablet", payload=f"m{i}".encode(), delivery=ALO) for i in range(3)]
    lost = await api.send(device_id="tablet", payload=b"at-most-once")  # no device: dropped, not an error
    assert lost.message_id
    device = await connect(clients, platform, "tablet")
    got = await device.read_messages(3)
    assert [m.message_id for m in got] == [s.message_id for s in sent]
    assert all(m.requires_ack for m in got)
    assert (await status(api, lost.message_id)).state == State.DELIVERY_STATE_NO_ROUTE
    # Nothing else is pending: the next message is a fresh one.
    fresh = await api.send(device_id="tablet", payload=b"fresh")
    assert [m.message_id for m in await device.read_messages(1)] == [fresh.message_id]


async def test_offline_devices_of_a_user_get_messages_sent_to_the_user(platform, clients):
    api = clients("api", addr(platform.ports.api))
    phone = await connect(clients, platform, "phone", user_id="kim")
    tv = await connect(clients, platform, "tv", user_id="kim")
    await tv.close()  # tv is known to belong to kim, but offline now
    sent = await api.send(user_id="kim", payload=b"hello kim", delivery=ALO)
    assert [m.message_id for m in await phone.read_messages(1)] == [sent.message_id]
    tv = await connect(clients, platform, "tv", user_id="kim")
    assert [m.message_id for m in await tv.read_messages(1)] == [sent.message_id]


async def test_unacked_messages_are_replayed_oldest_first_before_new_ones(platform, clients):
    api = clients("api", addr(platform.ports.api))
    device = await connect(clients, platform, "d")
    sent = [await api.send(device_id="d", payload=str(i).encode(), delivery=ALO) for i in range(5)]
    first = await device.read_messages(5, ack=False)
    assert [m.message_id for m in first] == [s.message_id for s in sent]
    await device.close()  # lost connection before acking anything

    again = await connect(clients, platform, "d")
    new = await api.send(device_id="d", payload=b"new", priority=message_pb2.PRIORITY_HIGH, delivery=ALO)
    replay = await again.read_messages(6)
    assert [m.message_id for m in replay] == [s.message_id for s in sent] + [new.message_id]

    async def inbox_empty() -> bool:
        return await platform.inbox.size("d") == 0

    await eventually(inbox_empty, what="acks to empty the inbox")
    await again.close()
    third = await connect(clients, platform, "d")
    marker = await api.send(device_id="d", payload=b"marker")
    assert [m.message_id for m in await third.read_messages(1)] == [marker.message_id]


async def test_expired_messages_are_never_pushed(platform, clients):
    api = clients("api", addr(platform.ports.api))
    in_inbox = await api.send(device_id="late", payload=b"old news", delivery=ALO, ttl_seconds=1)

    async def stored() -> bool:
        return [m.message_id for m in await platform.inbox.pending("late")] == [in_inbox.message_id]

    await eventually(stored, what="the first message in the inbox")
    await platform.router.pause()
    in_lane = await api.send(device_id="late", payload=b"stale in lane", delivery=ALO, ttl_seconds=1)
    # The api stamps expires_at_ms = its clock (this machine's) + ttl when it accepts a message, and
    # it accepted this one before Send returned: so from this instant on both have expired.
    both_expired_ms = now_ms() + 1000
    # The TTL is the clock itself: no event to wait on before it runs out.
    await eventually(lambda: now_ms() > both_expired_ms, timeout=5, what="both TTLs to run out")
    platform.router.resume()
    await eventually(lambda: _expired_status(api, in_lane.message_id), what="the lane message to expire")
    expired_before = REGISTRY.get_sample_value("pushplat_messages_dropped_total", {"reason": "expired"}) or 0
    device = await connect(clients, platform, "late")
    marker = await api.send(device_id="late", payload=b"marker")
    # The inbox replay goes out before any new message: had the expired one been replayed, it
    # would come first.
    assert [m.message_id for m in await device.read_messages(1)] == [marker.message_id]
    expired_after = REGISTRY.get_sample_value("pushplat_messages_dropped_total", {"reason": "expired"}) or 0
    assert expired_after - expired_before == 1, "the expired inbox message was dropped (and counted) at the replay"


async def _expired_status(api, message_id: str) -> bool:
    return (await status(api, message_id)).state == State.DELIVERY_STATE_EXPIRED


async def test_collapse_key_keeps_only_the_newest_undelivered_message(platform, clients):
    api = clients("api", addr(platform.ports.api))
    sent = [
        await api.send(device_id="fan", payload=score.encode(), delivery=ALO, collapse_key="score")
        for score in ("1-0", "2-0", "2-1")
    ]
    last = sent[-1]
    other = await api.send(device_id="fan", payload=b"news", delivery=ALO, collapse_key="news")
    device = await connect(clients, platform, "fan")
    got = await device.read_messages(2)
    assert [(m.message_id, m.payload) for m in got] == [(last.message_id, b"2-1"), (other.message_id, b"news")]
    # The replaced messages' status says, per device, which message replaced them.
    for older, newer in ((sent[0], sent[1]), (sent[1], sent[2])):
        [fan] = [d for d in (await status(api, older.message_id)).devices if d.device_id == "fan"]
        assert fan.state == State.DELIVERY_STATE_DROPPED and fan.detail == f"collapsed by {newer.message_id}"


async def test_idempotent_send_returns_the_first_id_and_delivers_once(platform, clients):
    api = clients("api", addr(platform.ports.api))
    device = await connect(clients, platform, "d")
    first = await api.send(device_id="d", payload=b"once", idempotency_key="order-42")
    second = await api.send(device_id="d", payload=b"once", idempotency_key="order-42")
    assert not first.duplicate and second.duplicate and second.message_id == first.message_id
    marker = await api.send(device_id="d", payload=b"marker", idempotency_key="order-43")
    got = await device.read_messages(2)
    assert [m.message_id for m in got] == [first.message_id, marker.message_id]


async def test_status_follows_a_message_to_its_ack_and_counts_labels(start_platform, clients):
    platform = await start_platform(metric_label_keys=["variant"])
    api = clients("api", addr(platform.ports.api))
    device = await connect(clients, platform, "d1", user_id="lee")
    offline = await connect(clients, platform, "d2", user_id="lee")
    await offline.close()

    def counted(state: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "pushplat_labelled_events_total", {"state": state, "label": "variant", "value": "B"}
            )
            or 0.0
        )

    before = counted("acked"), counted("delivered_to_edge")
    sent = await api.send(user_id="lee", payload=b"x", delivery=ALO, labels={"variant": "B"})
    await device.read_messages(1)

    async def acked() -> bool:
        return await device_state(api, sent.message_id, "d1") == State.DELIVERY_STATE_ACKED

    await eventually(acked, what="the ack receipt")
    reply = await status(api, sent.message_id)
    assert dict(reply.labels) == {"variant": "B"}
    by_device = {d.device_id: d for d in reply.devices}
    assert by_device["d1"].edge_id == platform.config.edge_id
    assert by_device["d2"].state == State.DELIVERY_STATE_NO_ROUTE and "inbox" in by_device["d2"].detail
    assert counted("acked") == before[0] + 1 and counted("delivered_to_edge") == before[1] + 1

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await status(api, "no-such-message")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_presence_lists_connected_devices_and_their_edge(platform, clients):
    api = clients("api", addr(platform.ports.api))
    await connect(clients, platform, "p1", user_id="max")
    gone = await connect(clients, platform, "p2", user_id="max")
    await connect(clients, platform, "p3", user_id="max")
    await gone.close()

    async def two_left() -> bool:
        reply = await api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="max"))
        return [d.device_id for d in reply.devices] == ["p1", "p3"]

    await eventually(two_left, what="p2 to leave")
    reply = await api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="max"))
    assert {d.edge_id for d in reply.devices} == {platform.config.edge_id}
    empty = await api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="nobody"))
    assert list(empty.devices) == []
