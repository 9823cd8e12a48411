"""CircuitBreaker: stop calling an edge that keeps failing, and probe it now and then.

closed: calls go through; `failures_to_open` consecutive failures open it.
open: nothing is sent; after the open time (doubling on every failed probe, up to
MAX_OPEN_SECONDS) it is half-open.
half_open: one probe is sent; success closes it, failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

MAX_OPEN_SECONDS = 30.0


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int,
        open_seconds: float,
        on_change: Callable[[CircuitState, CircuitState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = max(1, failures_to_open)
        self.base_open_seconds = open_seconds
        self.open_seconds = open_seconds
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.retry_at = 0.0
        self._on_change = on_change
        self._clock = clock

    @property
    def closed(self) -> bool:
        return self.state is CircuitState.CLOSED

    def success(self) -> None:
        self.failures = 0
        self.open_seconds = self.base_open_seconds
        self._move(CircuitState.CLOSED)

    def failure(self) -> bool:
        """Count a failed call; True if this one opened the circuit."""
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN:
            # The probe failed: wait longer before the next one.
            self.open_seconds = min(self.open_seconds * 2, MAX_OPEN_SECONDS)
        elif self.state is CircuitState.OPEN or self.failures < self.failures_to_open:
            return False
        self.retry_at = self._clock() + self.open_seconds
        self._move(CircuitState.OPEN)
        return True

    def seconds_until_probe(self) -> float:
        return max(0.0, self.retry_at - self._clock())

    def half_open(self) -> None:
        if self.state is CircuitState.OPEN:
            self._move(CircuitState.HALF_OPEN)

    def _move(self, state: CircuitState) -> None:
        old, self.state = self.state, state
        if old is not state and self._on_change is not None:
            self._on_change(old, state)
