"""Redis / Redis Cluster idempotency keys: ``<prefix>:idem:{<sender scoped key>}`` holds
``"<request fingerprint> <message id>"`` of the claim, with the idempotency window as its TTL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pushplat.idempotency.base import Claim, IdempotencyStore, IdempotencyUnavailable, scoped
from pushplat.redis_support import RedisStore, Script, hash_tag, ttl_ms

# Claim-or-read in one step (ARGV: encoded claim, window ms): the holder's claim, or false (nil) when
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

# Compare-and-delete (ARGV: encoded claim): only the claim's own message may release it.
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

    def key(self, sender: str, key: str) -> str:
        return f"{self.prefix}:idem:{hash_tag(scoped(sender, key))}"

    async def claim(self, sender: str, key: str, claim: Claim, window_seconds: float) -> Claim | None:
        return (await self.claim_many(sender, [(key, claim)], window_seconds))[0]

    async def claim_many(
        self, sender: str, claims: Sequence[tuple[str, Claim]], window_seconds: float
    ) -> list[Claim | None]:
        """Every claim in one pipelined round trip; the scripts run in order, so a key repeated
        later in the same call sees the earlier claim (in a cluster, both go to the key's node)."""
        if not claims:
            return []
        window = ttl_ms(window_seconds)
        todo = [(self.key(sender, key), claim.encode()) for key, claim in claims]

        def build(pipe: Any, cached: bool) -> None:
            for redis_key, value in todo:
                _CLAIM.queue(pipe, redis_key, value, window, cached=cached)

        results = await self._guarded("claim", lambda: self._scripts(build))
        # None (Lua false): claimed now. A NOSCRIPT retry re-runs every claim, and a key this call
        # claimed then reads as held by this very claim: that is "claimed now" too.
        return [
            None if held is None or held == value else Claim.decode(held)
            for held, (_, value) in zip(results, todo, strict=True)
        ]

    async def release(self, sender: str, key: str, claim: Claim) -> None:
        await self.release_many(sender, [(key, claim)])

    async def release_many(self, sender: str, claims: Sequence[tuple[str, Claim]]) -> None:
        if not claims:
            return
        todo = [(self.key(sender, key), claim.encode()) for key, claim in claims]

        def build(pipe: Any, cached: bool) -> None:
            for redis_key, value in todo:
                _RELEASE.queue(pipe, redis_key, value, cached=cached)

        await self._guarded("release", lambda: self._scripts(build))
