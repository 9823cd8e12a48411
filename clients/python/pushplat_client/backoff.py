"""Exponential backoff with full jitter, for reconnect loops."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive retries: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter (rather than "exponential plus a little noise") spreads a crowd of clients
    that lost the same edge over the whole window, so they do not reconnect in waves.
    """

    def __init__(self, base: float = 0.2, cap: float = 30.0, rng: random.Random | None = None) -> None:
        if base <= 0:
            raise ValueError(f"Backoff base must be > 0, got {base!r}")
        if cap < base:
            raise ValueError(f"Backoff cap must be >= base, got cap={cap!r} base={base!r}")
        self.base = float(base)
        self.cap = float(cap)
        # A private Random per instance, so a seeded one in tests is not disturbed by others.
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays have been handed out since the last reset (stops growing at the cap)."""
        return self._attempt

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * 2**self._attempt)

    def next_delay(self) -> float:
        """The next delay in seconds; each call widens the window until it reaches ``cap``."""
        ceiling = self.ceiling()
        # Stop counting once capped: the window cannot grow further, and 2**attempt would
        # eventually overflow a float for a client that stays offline for days.
        if ceiling < self.cap:
            self._attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start over from ``base`` (after a successful connection)."""
        self._attempt = 0

    def __repr__(self) -> str:
        return f"Backoff(base={self.base}, cap={self.cap}, attempt={self._attempt})"
