"""Per-sender rate limits on the api: one token bucket per API-key identity.

Each message costs one token (a SendBatch costs one per request); the bucket refills at
``rate`` tokens per second up to ``burst``. The table of senders is bounded: identities come
from the configured keys, so it only fills if something is wrong, and then the least recently
seen sender is forgotten (and starts again with a full bucket).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from pushplat.metrics import LIMITS_HIT

MAX_SENDERS = 10_000


class SenderRateLimiter:
    def __init__(self, rate: float, burst: float = 0.0, max_senders: int = MAX_SENDERS) -> None:
        self.rate = max(rate, 0.0)
        # No burst given: one second's worth, and never less than one message.
        self.burst = burst if burst > 0 else max(self.rate, 1.0)
        self.max_senders = max_senders
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # sender -> [tokens, stamp]

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, sender: str, count: int = 1, now: float | None = None) -> int | None:
        """Take count tokens: None if they were there, else the milliseconds until they will be.
        A refused call takes nothing. The caller checks count <= burst first (see fits)."""
        if not self.rate:
            return None
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = [self.burst, now]
            if len(self._buckets) > self.max_senders:
                self._buckets.popitem(last=False)
                LIMITS_HIT.labels("senders").inc()
        else:
            self._buckets.move_to_end(sender)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= count:
            bucket[0] -= count
            return None
        return max(1, math.ceil((count - bucket[0]) / self.rate * 1000))

    def fits(self, count: int) -> bool:
        """Whether a call of count messages can ever pass (it cannot if it exceeds the burst)."""
        return not self.rate or count <= self.burst

    def __len__(self) -> int:
        return len(self._buckets)
