"""In-process idempotency keys for the embedded platform."""

from __future__ import annotations

import time

from pushplat.idempotency.base import IdempotencyStore


class MemoryIdempotencyStore(IdempotencyStore):
    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        self._keys: dict[str, tuple[str, float]] = {}

    async def claim(self, key: str, message_id: str, window_seconds: float) -> str | None:
        now = time.monotonic()
        held = self._keys.get(key)
        if held is not None and held[1] > now:
            return held[0]
        self._keys.pop(key, None)  # re-insert so insertion order tracks age
        self._keys[key] = (message_id, now + window_seconds)
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return None

    async def release(self, key: str, message_id: str) -> None:
        held = self._keys.get(key)
        if held is not None and held[0] == message_id:
            del self._keys[key]
