"""Redis / Redis Cluster registry backend.

Keys: the device key ``<prefix>:dev:{<device>}`` (hash user/edge/session, PEXPIRE ttl) is the
source of truth; the user key ``<prefix>:user:{<user>}`` is a ZSET index whose members are
``[device, session]`` (JSON) scored by expiry ms. Every Lua script touches ONE key, so no script
ever spans slots; the index is only a hint, confirmed against the device key on every lookup.

Why the session is part of the index member: the device key and the user key live in different
slots, so no script can update both atomically. With ``device`` alone as the member, an old
session's ZREM could race with a new session's ZADD for the same device (a fast reconnect to
another edge) and hide the live device from user lookups. With ``[device, session]`` every
writer only ever adds, extends or removes its OWN member, and stale members (superseded, or
expired by score) are removed lazily by lookups, the whole index expiring with its last device.

The URL syntax, client set-up, script runner and error mapping are shared with the other Redis
stores: see ``pushplat.redis_support`` (``RedisRegistry.from_url`` comes from ``RedisStore``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pushplat.redis_support import INDEX_ADD, REDIS_ERRORS, RedisStore, Script, ttl_ms
from pushplat.registry.base import DeviceOwned, Registry, RegistryUnavailable, Route

log = logging.getLogger("pushplat.registry")

# Index scores come from the writer's clock, lookups compare with the reader's clock; this
# slack covers clock skew between hosts so a live member is never treated as expired by score.
INDEX_SLACK_MS = 10_000


# Register: replace the whole route and its TTL in one step, so a crash can never leave a
# device key without a TTL (a ghost route that nobody refreshes and nothing expires). A live
# route of another user is left alone: {user, edge, session, 'owned'} says so.
_REGISTER = Script(
    """
local previous = redis.call('HMGET', KEYS[1], 'user', 'edge', 'session')
if previous[1] and previous[1] ~= ARGV[1] then
  previous[4] = 'owned'
  return previous
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'edge', ARGV[2], 'session', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return previous
"""
)

# Compare-and-delete: only the session that still owns the device may remove it.
_UNREGISTER = Script(
    """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
)

# Compare-and-extend: a replaced session's refresh must not keep the newer entry alive (or
# alive longer than its owner wants): 0. Its own entry is extended: 1. No entry at all (the
# store lost it, or it expired while Redis was unreachable) is re-created for this live
# session: 2. ARGV: session, ttl ms, user, edge.
_REFRESH = Script(
    """
local session = redis.call('HGET', KEYS[1], 'session')
if session == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not session then
  redis.call('HSET', KEYS[1], 'user', ARGV[3], 'edge', ARGV[4], 'session', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0
"""
)


def _member(device_id: str, session_id: str) -> str:
    # JSON makes the pair unambiguous whatever characters the ids contain, and is deterministic,
    # so ZREM finds exactly the member ZADD wrote.
    return json.dumps([device_id, session_id], separators=(",", ":"))


def _parse_member(member: str) -> tuple[str, str] | None:
    try:
        pair = json.loads(member)
    except ValueError:
        return None
    if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
        return pair[0], pair[1]
    return None


class RedisRegistry(RedisStore, Registry):
    """Registry on a standalone Redis (``redis://``, ``rediss://``) or a Redis Cluster."""

    kind = "registry"
    unavailable = RegistryUnavailable
    log = log  # the module's logger

    # -- key naming (public so tests and tools can check slots) ---------------------------------

    def device_key(self, device_id: str) -> str:
        return f"{self.prefix}:dev:{{{device_id}}}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}"

    def edge_key(self, edge_id: str) -> str:
        return f"{self.prefix}:edge:{{{edge_id}}}"

    def edges_key(self) -> str:
        # The index of edges (member: edge id, score: expiry ms), read by routers for topics.
        return f"{self.prefix}:edges"

    # -- Registry -------------------------------------------------------------------------------

    async def register(self, route: Route, ttl_seconds: float) -> Route | None:
        ttl = ttl_ms(ttl_seconds)
        expires = self._now_ms() + ttl

        def build(pipe: Any, cached: bool) -> None:
            _REGISTER.queue(
                pipe,
                self.device_key(route.device_id),
                route.user_id,
                route.edge_id,
                route.session_id,
                ttl,
                cached=cached,
            )
            INDEX_ADD.queue(
                pipe,
                self.user_key(route.user_id),
                _member(route.device_id, route.session_id),
                expires,
                ttl + INDEX_SLACK_MS,
                cached=cached,
            )

        results = await self._guarded("register", lambda: self._scripts(build))
        if results[0] and len(results[0]) > 3:
            # The index member this pipeline added names a device key of another user, so
            # lookups skip it and clean it up.
            raise DeviceOwned(route.device_id, results[0][0])
        user, edge, session = (results[0] or [None, None, None])[:3]
        if not session or session == route.session_id:
            return None
        return Route(route.device_id, user or "", edge or "", session)

    async def unregister(self, route: Route) -> bool:
        def build(pipe: Any, cached: bool) -> None:
            _UNREGISTER.queue(pipe, self.device_key(route.device_id), route.session_id, cached=cached)
            # The member names this session only, so removing it is right whether or not the CAS
            # won: it can never hide a newer session's member.
            pipe.zrem(self.user_key(route.user_id), _member(route.device_id, route.session_id))

        results = await self._guarded("unregister", lambda: self._scripts(build))
        return bool(results[0])

    async def refresh(self, routes: Sequence[Route], ttl_seconds: float) -> list[Route]:
        if not routes:
            return []
        ttl = ttl_ms(ttl_seconds)
        expires = self._now_ms() + ttl

        def extend(pipe: Any, cached: bool) -> None:
            for route in routes:
                _REFRESH.queue(
                    pipe,
                    self.device_key(route.device_id),
                    route.session_id,
                    ttl,
                    route.user_id,
                    route.edge_id,
                    cached=cached,
                )

        async def run() -> list[Route]:
            owned = await self._scripts(extend)
            mine = [route for route, ok in zip(routes, owned, strict=True) if ok]
            if not mine:
                return []

            # Second round trip, only for sessions that still own their device (or got it back):
            # this also re-adds a member that a failed register, an over-eager cleanup or the
            # store's loss left out.
            def reindex(pipe: Any, cached: bool) -> None:
                for route in mine:
                    INDEX_ADD.queue(
                        pipe,
                        self.user_key(route.user_id),
                        _member(route.device_id, route.session_id),
                        expires,
                        ttl + INDEX_SLACK_MS,
                        cached=cached,
                    )

            await self._scripts(reindex)
            return [route for route, ok in zip(routes, owned, strict=True) if ok == 2]

        return await self._guarded("refresh", run)

    async def lookup_devices(self, device_ids: Sequence[str]) -> dict[str, Route]:
        if not device_ids:
            return {}
        return await self._guarded("lookup_devices", lambda: self._read_devices(list(dict.fromkeys(device_ids))))

    async def lookup_users(self, user_ids: Sequence[str]) -> dict[str, list[Route]]:
        if not user_ids:
            return {}
        return await self._guarded("lookup_users", lambda: self._lookup_users(list(dict.fromkeys(user_ids))))

    async def set_edge(self, edge_id: str, address: str, ttl_seconds: float) -> None:
        key, ttl = self.edge_key(edge_id), ttl_ms(ttl_seconds)

        def build(pipe: Any, cached: bool) -> None:
            pipe.set(key, address, px=ttl)
            INDEX_ADD.queue(pipe, self.edges_key(), edge_id, self._now_ms() + ttl, ttl + INDEX_SLACK_MS, cached=cached)

        await self._guarded("set_edge", lambda: self._scripts(build))

    async def remove_edge(self, edge_id: str) -> None:
        def build(pipe: Any) -> None:
            pipe.delete(self.edge_key(edge_id))
            pipe.zrem(self.edges_key(), edge_id)

        await self._guarded("remove_edge", lambda: self._pipeline(build))

    async def live_edges(self) -> dict[str, str]:
        cutoff = self._now_ms() - INDEX_SLACK_MS

        def build(pipe: Any) -> None:
            pipe.zremrangebyscore(self.edges_key(), "-inf", f"({cutoff}")
            pipe.zrange(self.edges_key(), 0, -1)

        _, ids = await self._guarded("live_edges", lambda: self._pipeline(build))
        # The edge key is the truth (the index is a hint scored by the writer's clock).
        return await self.edge_addresses(ids) if ids else {}

    async def edge_addresses(self, edge_ids: Sequence[str]) -> dict[str, str]:
        if not edge_ids:
            return {}
        ids = list(dict.fromkeys(edge_ids))

        def build(pipe: Any) -> None:
            # One GET per edge rather than MGET: edge keys hash to different slots, and the
            # cluster pipeline still sends one batch per node.
            for edge_id in ids:
                pipe.get(self.edge_key(edge_id))

        values = await self._guarded("edge_addresses", lambda: self._pipeline(build))
        return {e: v for e, v in zip(ids, values, strict=True) if v is not None}

    # -- internals ------------------------------------------------------------------------------

    async def _read_devices(self, device_ids: list[str]) -> dict[str, Route]:
        def build(pipe: Any) -> None:
            for device_id in device_ids:
                pipe.hmget(self.device_key(device_id), "user", "edge", "session")

        rows = await self._pipeline(build)
        found: dict[str, Route] = {}
        for device_id, (user, edge, session) in zip(device_ids, rows, strict=True):
            # A missing key reads as three Nones; Redis never returns an expired key.
            if user is not None and edge is not None and session is not None:
                found[device_id] = Route(device_id, user, edge, session)
        return found

    async def _lookup_users(self, user_ids: list[str]) -> dict[str, list[Route]]:
        cutoff = self._now_ms() - INDEX_SLACK_MS

        def read_indexes(pipe: Any) -> None:
            for user_id in user_ids:
                pipe.zrange(self.user_key(user_id), 0, -1, withscores=True)

        indexes = await self._pipeline(read_indexes)
        candidates: list[tuple[str, str, str, str]] = []  # user, member, device, session
        stale: list[tuple[str, str]] = []  # user, member: superseded or unparsable
        expired_users: list[str] = []
        for user_id, entries in zip(user_ids, indexes, strict=True):
            if any(score < cutoff for _, score in entries):
                expired_users.append(user_id)
            for member, score in entries:
                if score < cutoff:
                    continue
                pair = _parse_member(member)
                if pair is None:
                    stale.append((user_id, member))
                else:
                    candidates.append((user_id, member, *pair))
        if not candidates and not stale and not expired_users:
            return {}

        routes = await self._read_devices(list(dict.fromkeys(c[2] for c in candidates))) if candidates else {}
        found: dict[str, list[Route]] = {}
        for user_id, member, device_id, session_id in candidates:
            route = routes.get(device_id)
            if route is not None and route.user_id == user_id and route.session_id == session_id:
                found.setdefault(user_id, []).append(route)
            elif route is not None:
                # The device now belongs to another session (or user): this member can never
                # become valid again (a session registers once), so it is safe to drop.
                stale.append((user_id, member))
            # A member whose device key is absent is kept until its score expires: its
            # register may still be in flight (the two keys are written independently).
        if stale or expired_users:
            await self._cleanup(stale, expired_users, cutoff)
        return found

    async def _cleanup(self, stale: list[tuple[str, str]], expired_users: list[str], cutoff: int) -> None:
        def build(pipe: Any) -> None:
            for user_id, member in stale:
                pipe.zrem(self.user_key(user_id), member)
            for user_id in expired_users:
                # By score at execution time, so a member extended meanwhile is kept.
                pipe.zremrangebyscore(self.user_key(user_id), "-inf", f"({cutoff}")

        try:
            await self._pipeline(build)
        except REDIS_ERRORS as exc:
            # Housekeeping only: the lookup's answer is already correct without it.
            log.debug("redis registry %s: index cleanup failed: %r", self.url, exc)
