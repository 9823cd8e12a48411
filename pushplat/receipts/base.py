"""Receipts: every step of a message's life as an event, and the last state per device.

Recording a receipt is a synchronous append of a tuple to a bounded buffer: nothing on the
Send, routing or ack path awaits a receipt. A background task flushes the buffer every
``flush_seconds`` (sooner when it is half full) to the backend: the status table that
Push.GetStatus reads and, on Kafka, one ``Receipt`` protobuf per state change on
``<prefix>.receipts``. A full buffer drops receipts (counted in
``pushplat_receipt_errors_total{what="buffer_full"}``): receipts are best effort, messages are not.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from pushplat_client.v1 import push_pb2

from pushplat.logs import LogLimiter, kv
from pushplat.messages import now_ms
from pushplat.metrics import RECEIPT_ERRORS, LabelMetrics
from pushplat.waits import wait_event

log = logging.getLogger("pushplat.receipts")

State = push_pb2.DeliveryState
ACKED = State.DELIVERY_STATE_ACKED
# States counted per label, with the metric's name for each.
COUNTED_FOR_LABELS = {State.DELIVERY_STATE_DELIVERED_TO_EDGE: "delivered_to_edge", ACKED: "acked"}

# What one buffered receipt costs besides its labels: the tuple and its small strings (the ids
# themselves are shared with the message). An estimate, used only for the buffer's byte bound.
ENTRY_BYTES = 160
DEFAULT_FLUSH_SECONDS = 0.05
DEFAULT_BUFFER_ENTRIES = 100_000
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024

_BUFFER_FULL = RECEIPT_ERRORS.labels("buffer_full")
_WRITE_FAILED = RECEIPT_ERRORS.labels("status")


class ReceiptEvent(NamedTuple):
    """One state change of a message (on one device, or as a whole when device_id is empty).
    A tuple, not a protobuf: it is built on the hot path; a ``Receipt`` is made only when an
    event is published."""

    message_id: str
    state: int
    device_id: str = ""
    user_id: str = ""
    edge_id: str = ""
    labels: dict[str, str] | None = None
    detail: str = ""
    sender_id: str = ""
    at_ms: int = 0
    # A topic message's events are aggregates (see merge_topic): its topic, and how many
    # devices this event counts.
    topic: str = ""
    count: int = 0

    def to_proto(self) -> push_pb2.Receipt:
        return push_pb2.Receipt(
            topic=self.topic,
            count=self.count,
            message_id=self.message_id,
            state=self.state,  # type: ignore[arg-type]
            device_id=self.device_id,
            user_id=self.user_id,
            edge_id=self.edge_id,
            at_ms=self.at_ms,
            labels=self.labels or {},
            detail=self.detail,
            sender_id=self.sender_id,
        )


def receipt(
    message_id: str,
    state: int,
    *,
    device_id: str = "",
    user_id: str = "",
    edge_id: str = "",
    labels: Mapping[str, str] | None = None,
    detail: str = "",
    sender_id: str = "",
    at_ms: int = 0,
    topic: str = "",
    count: int = 0,
) -> ReceiptEvent:
    # Labels are copied (only when there are any): a protobuf map would keep its whole message,
    # payload included, alive while the receipt waits in the buffer.
    return ReceiptEvent(
        message_id,
        state,
        device_id,
        user_id,
        edge_id,
        dict(labels) if labels else None,
        detail,
        sender_id,
        at_ms or now_ms(),
        topic,
        count,
    )


def merge_topic(counts: push_pb2.TopicStatus, r: ReceiptEvent) -> None:
    """A topic message's status is counts, never a list of devices: the router's receipt per edge
    reached, each edge's fan-out receipt (devices written, and dropped by reason), and each ack.
    status_redis's script mirrors this rule."""
    counts.topic = r.topic
    if r.state == State.DELIVERY_STATE_DELIVERED_TO_EDGE:
        if r.detail == FANOUT:
            counts.devices_written += r.count
        else:
            counts.edges_reached += 1
    elif r.state == State.DELIVERY_STATE_ACKED:
        counts.devices_acked += max(r.count, 1)  # an edge counts its acks of one message
    elif r.state != State.DELIVERY_STATE_ACCEPTED:
        counts.dropped[r.detail or f"state_{r.state}"] += max(r.count, 1)


class Receipts(ABC):
    # Which labels are counted in metrics; open_receipts sets the operator's choice.
    label_metrics: LabelMetrics = LabelMetrics()

    def __init__(
        self,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_entries: int = DEFAULT_BUFFER_ENTRIES,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        if flush_seconds <= 0 or max_entries < 1 or max_bytes < ENTRY_BYTES:
            raise ValueError(
                f"receipt buffer: flush interval must be > 0 and the buffer at least 1 entry and "
                f"{ENTRY_BYTES} bytes, got {flush_seconds}s, {max_entries} entries, {max_bytes} bytes"
            )
        self.flush_seconds = flush_seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._pending: list[ReceiptEvent] = []
        self._pending_bytes = 0
        self._high_water = max(1, max_entries // 2)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._full_log = LogLimiter(10.0)

    # -- the hot path ------------------------------------------------------------------

    def record(self, events: Iterable[ReceiptEvent]) -> None:
        """Buffer events for the next flush. Never blocks and never raises."""
        pending = self._pending
        dropped = 0
        for event in events:
            size = ENTRY_BYTES
            labels = event.labels
            if labels:
                size += sum(map(len, labels)) + sum(map(len, labels.values()))
            if len(pending) >= self.max_entries or self._pending_bytes + size > self.max_bytes:
                dropped += 1
                continue
            pending.append(event)
            self._pending_bytes += size
        if dropped:
            _BUFFER_FULL.inc(dropped)
            allowed, held_back = self._full_log.allow("buffer_full")
            if allowed:
                log.warning(
                    kv(
                        "receipts.buffer_full",
                        dropped=dropped,
                        entries=len(pending),
                        bytes=self._pending_bytes,
                        lines_held_back=held_back or None,
                        detail="receipts are dropped until the backend catches up "
                        "(--receipt-buffer-entries, --receipt-buffer-bytes)",
                    )
                )
        if len(pending) >= self._high_water:
            self._wake.set()

    async def emit(self, events: Iterable[ReceiptEvent]) -> None:
        """The old awaitable spelling of record(); it waits for nothing."""
        self.record(events)

    # -- flushing ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="receipts-flush")

    async def _run(self) -> None:
        while not self._closing:
            await wait_event(self._wake, self.flush_seconds)
            self._wake.clear()
            if self._pending:
                await self.flush()

    def _take(self) -> list[ReceiptEvent]:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if self.label_metrics.keys:
            for event in batch:
                counted_as = COUNTED_FOR_LABELS.get(event.state)
                if counted_as and event.labels:
                    # A topic's fan-out receipt stands for event.count devices.
                    self.label_metrics.count(counted_as, event.labels, event.count or 1)
        return batch

    async def flush(self) -> None:
        """Write everything buffered so far, in order. Never raises: failures are counted."""
        async with self._lock:  # one write at a time, so receipts reach the backend in order
            if not self._pending:
                return
            batch = self._take()
            try:
                await self._write(batch)
            except Exception as exc:
                _WRITE_FAILED.inc()
                log.warning(kv("receipts.status_failed", receipts=len(batch), error=str(exc)))

    @abstractmethod
    async def _write(self, events: list[ReceiptEvent]) -> None:
        """Publish the events and fold them into the status table, in order."""

    # -- reading -----------------------------------------------------------------------

    async def status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        """The last known state of the message and of each device; None if unknown, or if
        sender_id is not the sender that the message's ACCEPTED receipt named. This process's
        own buffer is flushed first, so a sender always reads its own Send's ACCEPTED."""
        await self.flush()
        return await self._read_status(message_id, sender_id)

    @abstractmethod
    async def _read_status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None: ...

    async def close(self) -> None:
        """Stop the flusher and write what is still buffered (shutdown keeps its receipts)."""
        if self._task is not None:
            # A flag as well as a cancel: a cancel swallowed on its way (seen in a store
            # client's wait) must not leave the flusher running and stop() hung.
            self._closing = True
            self._wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=1.0)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=5.0)
            self._task = None
        await self.flush()
        await self._close()

    async def _close(self) -> None:
        return None


# A topic receipt from an edge's fan-out: event.count devices written there.
FANOUT = "fanout"
