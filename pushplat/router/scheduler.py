"""LaneScheduler: which buffered items (records, or deliveries for one edge) go out next.

High goes first, but each non-empty lane gets a weighted share of every batch so low is never
starved. A high message waits at most for one batch, never for a whole low backlog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from pushplat.messages import LANES

DEFAULT_WEIGHTS = {"high": 8, "normal": 3, "low": 1}
_LANE_RANK = {lane: rank for rank, lane in enumerate(LANES)}


class Laned(Protocol):
    lane: str


T = TypeVar("T", bound=Laned)


class LaneScheduler(Generic[T]):
    def __init__(self, weights: dict[str, int] | None = None, buffer_limit: int = 1024) -> None:
        self.weights = weights or DEFAULT_WEIGHTS
        self.buffer_limit = buffer_limit
        self.buffers: dict[str, deque[T]] = {lane: deque() for lane in LANES}
        self._count = 0

    def add(self, items: Iterable[T]) -> None:
        buffers = self.buffers
        for item in items:
            buffers[item.lane].append(item)
            self._count += 1

    def put_back(self, items: list[T]) -> None:
        """Return taken items to the front of their lanes, in their order (a failed attempt)."""
        for item in reversed(items):
            self.buffers[item.lane].appendleft(item)
            self._count += 1

    def hungry_lanes(self) -> list[str]:
        """Lanes worth fetching from: their buffer has room, so the backlog stays in the lane."""
        return [lane for lane in LANES if len(self.buffers[lane]) < self.buffer_limit // 2]

    def buffered(self) -> int:
        return self._count

    def take(self, batch_size: int, max_bytes: int = 0) -> list[T]:
        """Up to batch_size items: high first, then normal, then low, each lane in order. With
        max_bytes, also stop before the items' `size` would pass it (always at least one item)."""
        active = [lane for lane in LANES if self.buffers[lane]]
        if not active:
            return []
        total_weight = sum(self.weights[lane] for lane in active)
        shares = {lane: max(1, batch_size * self.weights[lane] // total_weight) for lane in active}
        batch: list[T] = []
        used = 0
        full = False
        # First each lane's share, then the unused share to the highest lanes that still have items.
        for limits in (shares, None):
            for lane in active:
                buffer = self.buffers[lane]
                quota = min(shares[lane], len(buffer)) if limits else len(buffer)
                while quota and buffer and len(batch) < batch_size:
                    if max_bytes:
                        size = buffer[0].size  # type: ignore[attr-defined]
                        if batch and used + size > max_bytes:
                            full = True
                            break
                        used += size
                    batch.append(buffer.popleft())
                    quota -= 1
                if full:
                    break
            if full or len(batch) >= batch_size:
                break
        self._count -= len(batch)
        batch.sort(key=lambda item: _LANE_RANK[item.lane])  # stable: keeps each lane's order
        return batch
