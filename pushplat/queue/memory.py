"""In-process lanes for the embedded platform: three FIFO deques and a wake-up event."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence

from pushplat.messages import LANES
from pushplat.queue.base import LaneConsumer, LaneProducer, QueueUnavailable, Record
from pushplat.v1 import delivery_pb2
from pushplat.waits import wait_event


class MemoryLanes:
    """The shared lanes; hand the same instance to the producer and the consumer."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.lanes: dict[str, deque[Record]] = {lane: deque() for lane in LANES}
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
        queue = self._lanes.lanes[lane]
        if len(queue) + len(envelopes) > self._lanes.capacity:
            error = QueueUnavailable(f"lane {lane} is full ({self._lanes.capacity} messages)")
            return [error] * len(envelopes)
        queue.extend([Record(lane, envelope) for envelope in envelopes])
        self._lanes.ready.set()
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
            queue = self._lanes.lanes[lane]
            while queue and len(records) < max_records:
                records.append(queue.popleft())
        return records

    async def commit(self, records: Sequence[Record]) -> None:
        # Taking a record from a deque already removes it: nothing is redelivered in-process.
        return None
