"""Redis / Redis Cluster idempotency keys: ``<prefix>:idem:{<key>}`` holds the message id that
claimed the key, with the idempotency window as its TTL."""

from __future__ import annotations

import logging
from typing import Any

from pushplat.idempotency.base import IdempotencyStore, IdempotencyUnavailable
from pushplat.redis_support import RedisStore, Script, hash_tag, ttl_ms

# Claim-or-read in one step (ARGV: message id, window ms): the holder's id, or false (nil) when
# this call claimed the key. Atomic, so no claim can slip in between a failed SET NX and the GET
# (nor can the key expire there); and it needs no Redis 7 (SET NX GET).
_CLAIM = Script(
    """
local holder = redis.call('GET', KEYS[1])
if holder then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
)

# Compare-and-delete (ARGV: message id): only the claim's own message may release it.
_RELEASE = Script(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""
)


class RedisIdempotencyStore(RedisStore, IdempotencyStore):
    """Idempotency keys on a standalone Redis or a Redis Cluster."""

    kind = "idempotency store"
    unavailable = IdempotencyUnavailable
    log = logging.getLogger("pushplat.idempotency")

    def key(self, key: str) -> str:
        return f"{self.prefix}:idem:{hash_tag(key)}"

    async def claim(self, key: str, message_id: str, window_seconds: float) -> str | None:
        redis_key, window = self.key(key), ttl_ms(window_seconds)

        def build(pipe: Any, cached: bool) -> None:
            _CLAIM.queue(pipe, redis_key, message_id, window, cached=cached)

        results = await self._guarded("claim", lambda: self._scripts(build))
        return results[0]  # None (Lua false) when claimed now

    async def release(self, key: str, message_id: str) -> None:
        redis_key = self.key(key)

        def build(pipe: Any, cached: bool) -> None:
            _RELEASE.queue(pipe, redis_key, message_id, cached=cached)

        await self._guarded("release", lambda: self._scripts(build))
