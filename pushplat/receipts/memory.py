"""In-process receipts for the embedded platform: a status table bounded in messages and bytes
(--memory-status-bytes) and a recent-events ring bounded in events.

The table holds plain Python values; a GetStatusResponse is built only when GetStatus asks.
Folding needs no await, so reads fold the buffer first and always see every recorded receipt.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pushplat_client.v1 import push_pb2

from pushplat.bounded import ByteBoundedMap
from pushplat.receipts.base import ACKED, ReceiptEvent, Receipts, merge_topic

# What a status entry costs, measured (RSS of 20,000 entries): 525 bytes for a message and its
# first device, 121 per further device, plus the ids' strings once the table alone holds them;
# labels count twice their length.
STATUS_BYTES = 640
DEVICE_BYTES = 180
DEFAULT_STATUS_BYTES = 32 * 1024 * 1024


def _size(status: _Status) -> int:
    labels = 2 * (sum(map(len, status.labels)) + sum(map(len, status.labels.values()))) if status.labels else 0
    # A topic message's counts: about one device's worth, and one per reason it was dropped for.
    topic = DEVICE_BYTES * (1 + len(status.topic.dropped)) if status.topic is not None else 0
    return STATUS_BYTES + DEVICE_BYTES * max(len(status.devices) - 1, 0) + labels + topic


class _Status:
    __slots__ = ("devices", "labels", "sender", "state", "topic")

    def __init__(self, sender: str) -> None:
        self.state = 0
        self.sender = sender
        self.labels: dict[str, str] | None = None
        # A topic message's counts (merge_topic); it never has devices.
        self.topic: push_pb2.TopicStatus | None = None
        # device -> [state, updated_at_ms, edge_id, detail], in the order devices were first seen
        self.devices: dict[str, list[Any]] = {}


class MemoryReceipts(Receipts):
    # Bounded: about 1 KiB per tracked message, so `pushplat dev` stays small under load.
    def __init__(
        self,
        max_messages: int = 20_000,
        max_events: int = 10_000,
        max_status_bytes: int = DEFAULT_STATUS_BYTES,
        **buffer: Any,
    ) -> None:
        super().__init__(**buffer)
        self.max_messages = max_messages
        # The oldest messages are forgotten first (GetStatus then answers NOT_FOUND for them);
        # evictions are counted in pushplat_store_evictions_total{store="status"}.
        self._status: ByteBoundedMap[str, _Status] = ByteBoundedMap(
            max_status_bytes, "status", limit_entries=max_messages
        )
        self._events: deque[ReceiptEvent] = deque(maxlen=max_events)

    @property
    def events(self) -> deque[ReceiptEvent]:
        """The most recent receipt events (folded up to now), oldest first."""
        self._fold_pending()
        return self._events

    def _fold_pending(self) -> None:
        if self._pending:
            self._fold(self._take())

    async def flush(self) -> None:
        self._fold_pending()

    async def _write(self, events: list[ReceiptEvent]) -> None:
        self._fold(events)

    def _fold(self, events: list[ReceiptEvent]) -> None:
        """The merge rule, which status_redis's Lua script mirrors: the message's state is the
        last one; the first sender and the first non-empty labels stay; an ack is final for a device."""
        table = self._status
        self._events.extend(events)
        for e in events:
            status = table.get(e.message_id)
            grew = status is None
            if status is None:
                status = _Status(e.sender_id)
            elif e.sender_id and not status.sender:
                status.sender = e.sender_id
            if e.labels and not status.labels:
                status.labels = e.labels
                grew = True
            status.state = e.state
            if e.topic:
                if status.topic is None:
                    status.topic = push_pb2.TopicStatus()
                    grew = True
                reasons = len(status.topic.dropped)
                merge_topic(status.topic, e)
                if grew or len(status.topic.dropped) != reasons:
                    table.update(e.message_id, status, _size(status))
                continue
            device = status.devices.get(e.device_id) if e.device_id else None
            if e.device_id and device is None:
                status.devices[e.device_id] = [e.state, e.at_ms, e.edge_id, e.detail]
                grew = True
            if grew:
                # Re-sized in place (its age stays); may evict the oldest messages.
                table.update(e.message_id, status, _size(status))
            if device is None:
                continue
            if device[0] != ACKED or e.state == ACKED:
                device[0], device[1], device[3] = e.state, e.at_ms, e.detail
                if e.edge_id:
                    device[2] = e.edge_id

    async def _read_status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        status = self._status.get(message_id)
        if status is None or status.sender != sender_id:
            return None
        response = push_pb2.GetStatusResponse(message_id=message_id, state=status.state, labels=status.labels or {})  # type: ignore[arg-type]
        if status.topic is not None:
            response.topic.CopyFrom(status.topic)
        for device_id, (state, at, edge, detail) in status.devices.items():
            response.devices.add(device_id=device_id, state=state, updated_at_ms=at, edge_id=edge, detail=detail)
        return response
