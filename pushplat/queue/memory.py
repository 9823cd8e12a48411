"""In-process lanes for the embedded platform: three FIFO deques and a wake-up event, bounded in
messages and in bytes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence

from pushplat.messages import LANES
from pushplat.metrics import LIMITS_HIT
from pushplat.queue.base import LaneConsumer, LaneProducer, QueueUnavailable, Record
from pushplat.v1 import delivery_pb2
from pushplat.waits import wait_event

# A queued envelope costs its serialized size plus about this much (RSS of 10,000 records:
# 600-1,000 bytes beyond the payload for small ones: the Record, the protobuf arena, the slot).
RECORD_OVERHEAD_BYTES = 1024
DEFAULT_CAPACITY_BYTES = 256 * 1024 * 1024
_LANE_FULL = LIMITS_HIT.labels("lane_full")


class MemoryLanes:
    """The shared lanes; hand the same instance to the producer and the consumer."""

    def __init__(self, capacity: int = 1_000_000, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        if capacity < 1 or capacity_bytes < 1:
            raise ValueError(f"lane bounds must be at least 1, got {capacity} messages and {capacity_bytes} bytes")
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self.lanes: dict[str, deque[Record]] = {lane: deque() for lane in LANES}
        # Each record's estimated size, in step with self.lanes, and each lane's total.
        self.sizes: dict[str, deque[int]] = {lane: deque() for lane in LANES}
        self.bytes: dict[str, int] = dict.fromkeys(LANES, 0)
        self.ready = asyncio.Event()

    def depth(self, lane: str) -> int:
        return len(self.lanes[lane])


class MemoryLaneProducer(LaneProducer):
    def __init__(self, lanes: MemoryLanes) -> None:
        self._lanes = lanes

    async def publish_many(
        self, lane: str, envelopes: Sequence[delivery_pb2.Envelope]
    ) -> list[QueueUnavailable | None]:
        """One append for the lot: all of them fit in the lane, or none is taken."""
        lanes = self._lanes
        queue = lanes.lanes[lane]
        sizes = [envelope.ByteSize() + RECORD_OVERHEAD_BYTES for envelope in envelopes]
        error = None
        if len(queue) + len(envelopes) > lanes.capacity:
            error = QueueUnavailable(f"lane {lane} is full ({lanes.capacity} messages, --lane-capacity)")
        elif queue and lanes.bytes[lane] + sum(sizes) > lanes.capacity_bytes:
            error = QueueUnavailable(f"lane {lane} is full ({lanes.capacity_bytes} bytes, --lane-bytes)")
        if error is not None:
            _LANE_FULL.inc(len(envelopes))
            return [error] * len(envelopes)
        queue.extend([Record(lane, envelope) for envelope in envelopes])
        lanes.sizes[lane].extend(sizes)
        lanes.bytes[lane] += sum(sizes)
        lanes.ready.set()
        return [None] * len(envelopes)


class MemoryLaneConsumer(LaneConsumer):
    def __init__(self, lanes: MemoryLanes) -> None:
        self._lanes = lanes

    async def fetch(self, lanes: Collection[str], max_records: int, timeout: float) -> list[Record]:
        if not any(self._lanes.lanes[lane] for lane in lanes) and timeout > 0:
            self._lanes.ready.clear()
            if not await wait_event(self._lanes.ready, timeout):
                return []
        records: list[Record] = []
        for lane in LANES:
            if lane not in lanes:
                continue
            queue, sizes = self._lanes.lanes[lane], self._lanes.sizes[lane]
            while queue and len(records) < max_records:
                records.append(queue.popleft())
                self._lanes.bytes[lane] -= sizes.popleft()
        return records

    async def commit(self, records: Sequence[Record]) -> None:
        # Taking a record from a deque already removes it: nothing is redelivered in-process.
        return None
