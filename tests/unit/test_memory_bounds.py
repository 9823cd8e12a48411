"""Every in-memory store of `pushplat dev` stays within its bound, drops the oldest first, and
counts what it dropped (pushplat_store_evictions_total{store}, pushplat_limits_hit_total)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import message_pb2

from pushplat.idempotency.base import Claim
from pushplat.idempotency.memory import KEY_OVERHEAD_BYTES, MemoryIdempotencyStore
from pushplat.inbox.memory import MESSAGE_OVERHEAD_BYTES, MemoryInbox
from pushplat.queue import QueueUnavailable
from pushplat.queue.memory import RECORD_OVERHEAD_BYTES, MemoryLaneConsumer, MemoryLaneProducer, MemoryLanes
from pushplat.receipts import State, receipt
from pushplat.receipts.memory import DEVICE_BYTES, STATUS_BYTES, MemoryReceipts
from pushplat.v1 import delivery_pb2


def evictions(store: str) -> float:
    return REGISTRY.get_sample_value("pushplat_store_evictions_total", {"store": store}) or 0.0


def limit_hits(limit: str) -> float:
    return REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": limit}) or 0.0


def message(i: int, payload: int = 1000) -> message_pb2.Message:
    return message_pb2.Message(message_id=f"m{i:04d}", payload=b"x" * payload)


async def test_status_table_forgets_the_oldest_messages_past_its_bytes():
    # Room for about 10 single-device entries.
    receipts = MemoryReceipts(max_status_bytes=10 * STATUS_BYTES + 100)
    before = evictions("status")
    for i in range(30):
        receipts.record([receipt(f"m{i}", State.DELIVERY_STATE_ACCEPTED, sender_id="s")])
        receipts.record([receipt(f"m{i}", State.DELIVERY_STATE_DELIVERED_TO_EDGE, device_id="d")])
    kept = [i for i in range(30) if await receipts.status(f"m{i}", "s") is not None]
    assert kept == list(range(20, 30))
    assert evictions("status") - before == 20
    # A later receipt for a kept message still updates it in place.
    receipts.record([receipt("m29", State.DELIVERY_STATE_ACKED, device_id="d")])
    status = await receipts.status("m29", "s")
    assert status is not None and status.devices[0].state == State.DELIVERY_STATE_ACKED


async def test_a_status_entry_grows_with_its_devices_and_evicts_older_ones():
    receipts = MemoryReceipts(max_status_bytes=3 * STATUS_BYTES + 50 * DEVICE_BYTES)
    receipts.record([receipt(f"m{i}", State.DELIVERY_STATE_ACCEPTED, sender_id="s") for i in range(3)])
    # m2 goes to 60 devices: it alone is over the bound, so the older messages go.
    receipts.record([receipt("m2", State.DELIVERY_STATE_DELIVERED_TO_EDGE, device_id=f"d{i}") for i in range(60)])
    assert [await receipts.status(f"m{i}", "s") is not None for i in range(3)] == [False, False, True]
    status = await receipts.status("m2", "s")
    assert status is not None and len(status.devices) == 60


async def test_the_status_table_is_bounded_in_messages_too():
    receipts = MemoryReceipts(max_messages=3)
    receipts.record([receipt(f"m{i}", State.DELIVERY_STATE_ACCEPTED) for i in range(5)])
    assert [await receipts.status(f"m{i}", "") is not None for i in range(5)] == [False, False, True, True, True]


async def test_idempotency_keys_past_the_bound_are_forgotten_oldest_first():
    store = MemoryIdempotencyStore(max_bytes=10 * (KEY_OVERHEAD_BYTES + 20))
    before = evictions("idempotency")
    for i in range(25):
        assert await store.claim("s", f"key-{i}", Claim(f"id-{i}", "f"), 3600) is None
    # The newest keys still answer with their claim; the oldest were evicted, so a repeat of one
    # is taken for a new request.
    assert await store.claim("s", "key-24", Claim("other", "f"), 3600) == Claim("id-24", "f")
    assert await store.claim("s", "key-0", Claim("again", "f"), 3600) is None
    assert evictions("idempotency") - before >= 15


async def test_idempotency_drops_expired_keys_without_counting_them_as_evictions():
    store = MemoryIdempotencyStore(max_bytes=1024 * 1024)
    before = evictions("idempotency")
    for i in range(5):
        await store.claim("s", f"old-{i}", Claim(f"id-{i}", "f"), -1)  # already expired
    await store.claim("s", "new", Claim("n", "f"), 3600)
    assert len(store._keys) == 1
    assert evictions("idempotency") == before


async def test_inbox_is_bounded_in_bytes_over_all_devices():
    size = 1000 + 10 + MESSAGE_OVERHEAD_BYTES  # payload + id and tags + overhead
    inbox = MemoryInbox(max_bytes=10 * size)
    before = evictions("inbox")
    for i in range(30):
        await inbox.put([f"d{i % 3}"], message(i))
    held = {d: [m.message_id for m in await inbox.pending(d)] for d in ("d0", "d1", "d2")}
    kept = sorted(int(m[1:]) for ids in held.values() for m in ids)
    # The newest messages of every device survive; the oldest of any device went first.
    assert kept == list(range(30 - len(kept), 30)) and 8 <= len(kept) <= 10
    assert evictions("inbox") - before == 30 - len(kept)
    # Acked messages give their bytes back: a full round of new ones evicts only what it must.
    for d, ids in held.items():
        await inbox.ack(d, ids)
    for i in range(30, 38):
        await inbox.put(["d0"], message(i))
    assert [m.message_id for m in await inbox.pending("d0")] == [f"m{i:04d}" for i in range(30, 38)]
    assert evictions("inbox") - before == 30 - len(kept)


async def test_inbox_collapse_and_per_device_limit_keep_the_byte_count_right():
    inbox = MemoryInbox(max_per_device=3, max_bytes=1024 * 1024)
    for i in range(10):
        await inbox.put(["d"], message_pb2.Message(message_id=f"c{i}", collapse_key="k", payload=b"x" * 100))
        await inbox.put(["d"], message(i, 100))
    assert len(await inbox.pending("d")) == 3
    await inbox.ack("d", [m.message_id for m in await inbox.pending("d")])
    assert inbox._sizes.bytes == 0 and not inbox._boxes and not inbox._collapse


async def test_inbox_device_bindings_are_bounded_and_forget_their_user_too():
    inbox = MemoryInbox(max_devices=2)
    before = limit_hits("inbox_devices")
    for i in range(5):
        assert await inbox.enroll(f"u{i}", f"d{i}", 3600) is None
    assert limit_hits("inbox_devices") - before == 3
    assert await inbox.devices_of(["u0", "u4"]) == {"u0": [], "u4": ["d4"]}
    assert set(inbox._users) == {"u3", "u4"}
    # The forgotten device can now be bound by anyone.
    assert await inbox.enroll("other", "d0", 3600) is None


def envelope(i: int, payload: int = 1000) -> delivery_pb2.Envelope:
    e = delivery_pb2.Envelope(user_id="u")
    e.message.CopyFrom(message(i, payload))
    return e


async def test_memory_lane_refuses_past_its_bytes_and_takes_again_once_drained():
    one = envelope(0).ByteSize() + RECORD_OVERHEAD_BYTES
    lanes = MemoryLanes(capacity=1000, capacity_bytes=5 * one)
    producer, consumer = MemoryLaneProducer(lanes), MemoryLaneConsumer(lanes)
    before = limit_hits("lane_full")
    for i in range(5):
        await producer.publish("normal", envelope(i))
    with pytest.raises(QueueUnavailable, match="--lane-bytes"):
        await producer.publish("normal", envelope(5))
    assert limit_hits("lane_full") - before == 1
    # Other lanes have their own budget.
    await producer.publish("high", envelope(6))
    records = await consumer.fetch(["high", "normal"], 100, 0)
    assert [r.envelope.message.message_id for r in records] == ["m0006", "m0000", "m0001", "m0002", "m0003", "m0004"]
    assert lanes.bytes == {"high": 0, "normal": 0, "low": 0}
    await producer.publish("normal", envelope(7))


async def test_memory_lane_takes_one_message_larger_than_its_bytes_when_empty():
    lanes = MemoryLanes(capacity=10, capacity_bytes=100)
    await MemoryLaneProducer(lanes).publish("low", envelope(0, 5000))
    with pytest.raises(QueueUnavailable, match="lane low is full"):
        await MemoryLaneProducer(lanes).publish("low", envelope(1, 10))
