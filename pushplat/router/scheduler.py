"""LaneScheduler: which buffered records a router routes next.

High goes first, but each non-empty lane gets a weighted share of every batch so low is never
starved. A high message waits at most for one batch, never for a whole low backlog.
"""

from __future__ import annotations

from collections import deque

from pushplat.messages import LANES
from pushplat.queue import Record

DEFAULT_WEIGHTS = {"high": 8, "normal": 3, "low": 1}


class LaneScheduler:
    def __init__(self, weights: dict[str, int] | None = None, buffer_limit: int = 1024) -> None:
        self.weights = weights or DEFAULT_WEIGHTS
        self.buffer_limit = buffer_limit
        self.buffers: dict[str, deque[Record]] = {lane: deque() for lane in LANES}

    def add(self, records: list[Record]) -> None:
        for record in records:
            self.buffers[record.lane].append(record)

    def hungry_lanes(self) -> list[str]:
        """Lanes worth fetching from: their buffer has room, so the backlog stays in the lane."""
        return [lane for lane in LANES if len(self.buffers[lane]) < self.buffer_limit // 2]

    def buffered(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def take(self, batch_size: int) -> list[Record]:
        """Up to batch_size records: high first, then normal, then low, each lane in order."""
        active = [lane for lane in LANES if self.buffers[lane]]
        if not active:
            return []
        total_weight = sum(self.weights[lane] for lane in active)
        shares = {lane: max(1, batch_size * self.weights[lane] // total_weight) for lane in active}
        batch: list[Record] = []
        for lane in active:
            buffer = self.buffers[lane]
            for _ in range(min(shares[lane], len(buffer))):
                batch.append(buffer.popleft())
        # Hand unused share to the highest lanes that still have records.
        for lane in active:
            buffer = self.buffers[lane]
            while buffer and len(batch) < batch_size:
                batch.append(buffer.popleft())
        batch.sort(key=lambda r: LANES.index(r.lane))  # stable: keeps each lane's order
        return batch
