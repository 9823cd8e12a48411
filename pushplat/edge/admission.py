"""Admission control: a cap on open connections and on new connections per second.

The edge asks only after a Hello authenticated, so failed Hellos never spend the budget of
good clients (streams still waiting for a Hello have their own cap, max_pending_hellos).

A reconnect storm must not take the edge down or starve the sessions it already holds, so
excess connects are refused early and cheaply with RESOURCE_EXHAUSTED and a retry hint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pushplat.token_bucket import TokenBucket


@dataclass
class Refusal:
    reason: str
    retry_after_ms: int


class AdmissionControl:
    def __init__(self, max_connections: int, max_connects_per_second: float, rng: random.Random | None = None) -> None:
        self.max_connections = max_connections
        self.rate = max_connects_per_second
        # A burst of up to one second's worth, refilled continuously.
        self._bucket = TokenBucket(max_connects_per_second, max(max_connects_per_second, 1.0))
        self._rng = rng or random.Random()

    def admit(self, open_connections: int) -> Refusal | None:
        """None to accept; otherwise why not and when to come back (jittered, so retries spread)."""
        if self.max_connections and open_connections >= self.max_connections:
            return Refusal("edge is at its connection limit", self._hint(5_000))
        if self.rate and not self._bucket.take():
            return Refusal("too many new connections per second", self._hint(1_000))
        return None

    def refund(self) -> None:
        """Give back the token of an admitted connect that was refused later (its device is taken)."""
        if self.rate:
            self._bucket.give_back()

    def _hint(self, base_ms: int) -> int:
        return int(base_ms / 2 + self._rng.uniform(0, base_ms))
