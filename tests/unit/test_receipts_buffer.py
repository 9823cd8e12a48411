"""The receipt buffer: recording never waits, the background flush keeps status current, the
bounds drop (and count) rather than grow, and shutdown flushes what is left."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from pushplat.receipts.base import ENTRY_BYTES, ReceiptEvent, Receipts, State, receipt
from pushplat.receipts.memory import MemoryReceipts
from tests.helpers import eventually

ACCEPTED = State.DELIVERY_STATE_ACCEPTED
DELIVERED = State.DELIVERY_STATE_DELIVERED_TO_EDGE
ACKED = State.DELIVERY_STATE_ACKED


def buffer_full() -> float:
    return REGISTRY.get_sample_value("pushplat_receipt_errors_total", {"what": "buffer_full"}) or 0.0


class Recorded(Receipts):
    """Keeps what each flush wrote; a write can be held to stand for a slow backend."""

    def __init__(self, **buffer: object) -> None:
        super().__init__(**buffer)  # type: ignore[arg-type]
        self.writes: list[list[ReceiptEvent]] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def _write(self, events: list[ReceiptEvent]) -> None:
        await self.hold.wait()
        self.writes.append(events)

    async def _read_status(self, message_id: str, sender_id: str) -> None:
        return None


async def test_record_is_synchronous_and_the_flusher_writes_in_the_background() -> None:
    receipts = Recorded(flush_seconds=0.02)
    await receipts.start()
    try:
        assert receipts.record([receipt("m1", ACCEPTED, sender_id="s")]) is None  # not a coroutine
        assert receipts.writes == [], "recording does not write"
        await eventually(lambda: receipts.writes != [], timeout=5, what="the background flush")
        [[event]] = receipts.writes
        assert (event.message_id, event.state, event.sender_id) == ("m1", ACCEPTED, "s")
        assert event.at_ms > 0
    finally:
        await receipts.close()


async def test_a_half_full_buffer_is_flushed_at_once() -> None:
    receipts = Recorded(flush_seconds=60, max_entries=10)
    await receipts.start()
    try:
        receipts.record([receipt(f"m{i}", ACCEPTED) for i in range(5)])
        await eventually(lambda: len(receipts.writes) == 1, timeout=5, what="a flush long before 60 s")
        assert [e.message_id for e in receipts.writes[0]] == [f"m{i}" for i in range(5)], "in order"
    finally:
        await receipts.close()


async def test_a_full_buffer_drops_and_counts_and_never_blocks() -> None:
    receipts = Recorded(flush_seconds=60, max_entries=4)
    receipts.hold.clear()  # the backend hangs
    before = buffer_full()
    receipts.record([receipt(f"m{i}", ACCEPTED) for i in range(10)])
    assert len(receipts._pending) == 4 and buffer_full() - before == 6
    # By bytes: labels count.
    small = Recorded(flush_seconds=60, max_bytes=3 * ENTRY_BYTES)
    small.record([receipt("a", ACCEPTED, labels={"k": "v" * 2 * ENTRY_BYTES}), receipt("b", ACCEPTED)])
    assert [e.message_id for e in small._pending] == ["b"] and buffer_full() - before == 7


async def test_close_flushes_what_is_left() -> None:
    receipts = Recorded(flush_seconds=60)
    await receipts.start()
    receipts.record([receipt("m", ACCEPTED), receipt("m", DELIVERED, device_id="d")])
    await receipts.close()
    assert [[(e.message_id, e.state) for e in w] for w in receipts.writes] == [[("m", ACCEPTED), ("m", DELIVERED)]]


async def test_memory_status_is_current_without_waiting_for_a_flush() -> None:
    receipts = MemoryReceipts(flush_seconds=60)
    await receipts.start()
    try:
        labels = {"campaign": "c1"}
        receipts.record([receipt("m", ACCEPTED, device_id="", user_id="kim", labels=labels, sender_id="billing")])
        labels["campaign"] = "changed later"  # recorded receipts hold their own copy
        receipts.record(
            [receipt("m", DELIVERED, device_id="phone", edge_id="e1"), receipt("m", ACKED, device_id="phone")]
        )
        receipts.record([receipt("m", DELIVERED, device_id="phone", edge_id="e2")])  # a late duplicate
        status = await receipts.status("m", "billing")
        assert status is not None and status.state == DELIVERED and dict(status.labels) == {"campaign": "c1"}
        assert [(d.device_id, d.state, d.edge_id) for d in status.devices] == [("phone", ACKED, "e1")]
        assert await receipts.status("m", "someone else") is None
        assert [e.state for e in receipts.events] == [ACCEPTED, DELIVERED, ACKED, DELIVERED]
    finally:
        await receipts.close()


def test_bad_buffer_settings_are_refused() -> None:
    for bad in ({"flush_seconds": 0}, {"max_entries": 0}, {"max_bytes": 1}):
        with pytest.raises(ValueError, match="receipt buffer"):
            MemoryReceipts(**bad)  # type: ignore[arg-type]


async def test_the_memory_table_is_bounded() -> None:
    receipts = MemoryReceipts(max_messages=3)
    receipts.record([receipt(f"m{i}", ACCEPTED) for i in range(5)])
    assert [await receipts.status(f"m{i}", "") is not None for i in range(5)] == [False, False, True, True, True]


async def test_the_old_emit_spelling_still_records() -> None:
    receipts = MemoryReceipts()
    await receipts.emit([receipt("m", ACCEPTED)])
    assert await receipts.status("m", "") is not None
