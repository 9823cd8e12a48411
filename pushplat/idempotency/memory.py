"""In-process idempotency keys for the embedded platform."""

from __future__ import annotations

import time

from pushplat.idempotency.base import Claim, IdempotencyStore, scoped


class MemoryIdempotencyStore(IdempotencyStore):
    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        self._keys: dict[str, tuple[Claim, float]] = {}

    async def claim(self, sender: str, key: str, claim: Claim, window_seconds: float) -> Claim | None:
        now = time.monotonic()
        name = scoped(sender, key)
        held = self._keys.get(name)
        if held is not None and held[1] > now:
            return held[0]
        self._keys.pop(name, None)  # re-insert so insertion order tracks age
        self._keys[name] = (claim, now + window_seconds)
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return None

    async def release(self, sender: str, key: str, claim: Claim) -> None:
        name = scoped(sender, key)
        held = self._keys.get(name)
        if held is not None and held[0] == claim:
            del self._keys[name]
