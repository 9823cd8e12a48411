"""In-process idempotency keys for the embedded platform, bounded in bytes."""

from __future__ import annotations

import time

from pushplat.bounded import ByteBoundedMap
from pushplat.idempotency.base import Claim, IdempotencyStore, scoped

# What a key costs in memory beyond its own length (measured: 376 bytes for a 30-character key):
# the map slot, the claim (message id and fingerprint) and the expiry.
KEY_OVERHEAD_BYTES = 350
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MemoryIdempotencyStore(IdempotencyStore):
    """Keys in claim order, which is expiry order (the window is the same for all): expired keys
    are dropped from the front, and past max_bytes the oldest live ones go too (a repeat of an
    evicted key is then taken for a new request; counted in pushplat_store_evictions_total)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._keys: ByteBoundedMap[str, tuple[Claim, float]] = ByteBoundedMap(max_bytes, "idempotency")

    async def claim(self, sender: str, key: str, claim: Claim, window_seconds: float) -> Claim | None:
        now = time.monotonic()
        name = scoped(sender, key)
        held = self._keys.get(name)
        if held is not None and held[1] > now:
            return held[0]
        self._purge(now)
        # put() re-inserts as the newest, so the order keeps tracking age.
        self._keys.put(name, (claim, now + window_seconds), KEY_OVERHEAD_BYTES + len(name))
        return None

    async def release(self, sender: str, key: str, claim: Claim) -> None:
        name = scoped(sender, key)
        held = self._keys.get(name)
        if held is not None and held[0] == claim:
            self._keys.pop(name)

    def _purge(self, now: float) -> None:
        for _ in range(8):  # a few per claim: amortized, never a long loop on the hot path
            oldest = self._keys.oldest()
            if oldest is None or oldest[1][1] > now:
                return
            self._keys.pop(oldest[0])
