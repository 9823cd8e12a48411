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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from pushplat.registry.base import Registry, RegistryUnavailable, Route

log = logging.getLogger("pushplat.registry")

T = TypeVar("T")

DEFAULT_PREFIX = "pp"
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 3.0
# In-flight operations per registry. The asyncio cluster client RAISES MaxConnectionsError
# (instead of waiting) once a node has this many connections busy, so a reconnect storm on an
# edge (thousands of concurrent register calls) must be queued here, not handed to redis-py.
MAX_IN_FLIGHT = 100
# Index scores come from the writer's clock, lookups compare with the reader's clock; this
# slack covers clock skew between hosts so a live member is never treated as expired by score.
INDEX_SLACK_MS = 10_000
# Cluster: how often a command/pipeline is retried while the topology is being rediscovered
# (a dead master, CLUSTERDOWN during an election). The cluster pipeline sleeps 0.25 s between
# attempts, so this rides out ~2 s; a longer failover surfaces as RegistryUnavailable, and the
# next call after the promotion re-reads the topology and works again.
CLUSTER_RETRIES = 8
# Standalone: few, fast retries, so that ping() on a dead server fails in about a second.
STANDALONE_RETRIES = 2


@dataclass(frozen=True)
class _Script:
    """A one-key Lua script, run by EVALSHA with a fallback to EVAL (which re-caches it)."""

    src: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.src.encode()).hexdigest()

    def queue(self, pipe: Any, key: str, *args: str | int, cached: bool) -> None:
        # execute_command rather than pipe.evalsha(): redis-py's cluster pipeline blocks the
        # evalsha() method (it cannot recover from NOSCRIPT on its own); _scripts() does that.
        if cached:
            pipe.execute_command("EVALSHA", self.sha, 1, key, *args)
        else:
            pipe.execute_command("EVAL", self.src, 1, key, *args)


# Register: replace the whole route and its TTL in one step, so a crash can never leave a
# device key without a TTL (a ghost route that nobody refreshes and nothing expires).
_REGISTER = _Script(
    """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'edge', ARGV[2], 'session', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# Compare-and-delete: only the session that still owns the device may remove it.
_UNREGISTER = _Script(
    """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
)

# Compare-and-extend: a replaced session's refresh must not keep the newer entry alive
# (or alive longer than its owner wants).
_REFRESH = _Script(
    """
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

# Index add/extend: scores only grow (a late, slower writer never shortens a member), and the
# index key lives at least as long as its longest-lived member plus the slack. PEXPIRE GT is
# not used because it refuses to put a TTL on a key that has none (a fresh ZSET).
_INDEX_ADD = _Script(
    """
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not old) or tonumber(old) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
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


def _ttl_ms(ttl_seconds: float) -> int:
    # PX/PEXPIRE reject 0 and negatives; the shortest meaningful TTL is 1 ms.
    return max(1, round(ttl_seconds * 1000))


def _redact(url: str) -> str:
    """The URL with any password masked, for error messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        # user:password keeps the user name; a lone userinfo may itself be a password.
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}" if ":" in userinfo else f"***@{hosts}"
    query = [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def _split_host_port(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {hostport!r}")
    return host.strip("[]"), int(port)


class RedisRegistry(Registry):
    """Registry on a standalone Redis (``redis://``, ``rediss://``) or a Redis Cluster."""

    def __init__(self, client: Redis | RedisCluster, *, prefix: str = DEFAULT_PREFIX, url: str = "") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would become the hash tag of EVERY key: one hot slot.
            raise ValueError(f"invalid registry key prefix {prefix!r}: must be non-empty and contain no braces")
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self.prefix = prefix
        self.url = _redact(url) if url else repr(client)
        self._gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    @classmethod
    def from_url(cls, url: str) -> RedisRegistry:
        """``redis://[user:pass@]host:port/db``, ``rediss://...`` or ``redis+cluster://host:port[,host:port...]``.

        ``?prefix=NAME`` sets the key prefix (default ``pp``); other query parameters go to redis-py.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = DEFAULT_PREFIX
        passthrough = []
        for key, value in query:
            if key == "prefix":
                prefix = value
            else:
                passthrough.append((key, value))
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": SOCKET_TIMEOUT_S,
        }
        if parts.scheme in ("redis", "rediss"):
            client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passthrough), ""))
            retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), STANDALONE_RETRIES)
            client: Redis | RedisCluster = Redis.from_url(client_url, retry=retry, **common)
        elif parts.scheme == "redis+cluster":
            if parts.path not in ("", "/", "/0"):
                raise ValueError(f"registry URL {_redact(url)!r}: a Redis Cluster has only database 0")
            userinfo, at, hosts = parts.netloc.rpartition("@")
            nodes = [_split_host_port(h) for h in hosts.split(",") if h]
            if not nodes:
                raise ValueError(f"registry URL {_redact(url)!r} names no cluster node")
            # redis-py wants redis://; extra nodes (comma-separated) are further startup nodes,
            # so the process can still bootstrap when the first one is down.
            first = f"{userinfo}{at}{hosts.split(',')[0]}"
            client_url = urlunsplit(("redis", first, parts.path, urlencode(passthrough), ""))
            retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), CLUSTER_RETRIES)
            client = RedisCluster.from_url(
                client_url,
                startup_nodes=[ClusterNode(h, p) for h, p in nodes[1:]],
                retry=retry,
                **common,
            )
        else:
            raise ValueError(f"not a Redis registry URL: {_redact(url)!r}")
        return cls(client, prefix=prefix, url=url)

    # -- key naming (public so tests and tools can check slots) ---------------------------------

    def device_key(self, device_id: str) -> str:
        return f"{self.prefix}:dev:{{{device_id}}}"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}"

    def edge_key(self, edge_id: str) -> str:
        return f"{self.prefix}:edge:{{{edge_id}}}"

    @property
    def client(self) -> Redis | RedisCluster:
        return self._client

    # -- Registry -------------------------------------------------------------------------------

    async def register(self, route: Route, ttl_seconds: float) -> None:
        ttl = _ttl_ms(ttl_seconds)
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
            _INDEX_ADD.queue(
                pipe,
                self.user_key(route.user_id),
                _member(route.device_id, route.session_id),
                expires,
                ttl + INDEX_SLACK_MS,
                cached=cached,
            )

        await self._guarded("register", lambda: self._scripts(build))

    async def unregister(self, route: Route) -> bool:
        def build(pipe: Any, cached: bool) -> None:
            _UNREGISTER.queue(pipe, self.device_key(route.device_id), route.session_id, cached=cached)
            # The member names this session only, so removing it is right whether or not the CAS
            # won: it can never hide a newer session's member.
            pipe.zrem(self.user_key(route.user_id), _member(route.device_id, route.session_id))

        results = await self._guarded("unregister", lambda: self._scripts(build))
        return bool(results[0])

    async def refresh(self, routes: Sequence[Route], ttl_seconds: float) -> None:
        if not routes:
            return
        ttl = _ttl_ms(ttl_seconds)
        expires = self._now_ms() + ttl

        def extend(pipe: Any, cached: bool) -> None:
            for route in routes:
                _REFRESH.queue(pipe, self.device_key(route.device_id), route.session_id, ttl, cached=cached)

        async def run() -> None:
            owned = await self._scripts(extend)
            mine = [route for route, ok in zip(routes, owned, strict=True) if ok]
            if not mine:
                return

            # Second round trip, only for sessions that still own their device: this also
            # re-adds a member that a failed register or an over-eager cleanup left out.
            def reindex(pipe: Any, cached: bool) -> None:
                for route in mine:
                    _INDEX_ADD.queue(
                        pipe,
                        self.user_key(route.user_id),
                        _member(route.device_id, route.session_id),
                        expires,
                        ttl + INDEX_SLACK_MS,
                        cached=cached,
                    )

            await self._scripts(reindex)

        await self._guarded("refresh", run)

    async def lookup_devices(self, device_ids: Sequence[str]) -> dict[str, Route]:
        if not device_ids:
            return {}
        return await self._guarded("lookup_devices", lambda: self._read_devices(list(dict.fromkeys(device_ids))))

    async def lookup_users(self, user_ids: Sequence[str]) -> dict[str, list[Route]]:
        if not user_ids:
            return {}
        return await self._guarded("lookup_users", lambda: self._lookup_users(list(dict.fromkeys(user_ids))))

    async def set_edge(self, edge_id: str, address: str, ttl_seconds: float) -> None:
        key = self.edge_key(edge_id)
        await self._guarded("set_edge", lambda: self._client.set(key, address, px=_ttl_ms(ttl_seconds)))

    async def remove_edge(self, edge_id: str) -> None:
        await self._guarded("remove_edge", lambda: self._client.delete(self.edge_key(edge_id)))

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

    async def ping(self) -> None:
        if self._cluster:
            # Every primary, so "reachable" means every slot is served.
            primaries = RedisCluster.PRIMARIES
            await self._guarded("ping", lambda: self._client.execute_command("PING", target_nodes=primaries))
        else:
            await self._guarded("ping", lambda: self._client.ping())

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, RedisClusterException, OSError) as exc:  # closing a dead client must not fail shutdown
            log.debug("closing redis registry %s: %r", self.url, exc)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def _guarded(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one registry operation under the in-flight cap, mapping Redis failures."""
        async with self._gate:
            try:
                return await call()
            except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
                # redis-py has already retried (and, in a cluster, re-read the topology); what
                # is left is an outage as far as the caller is concerned.
                raise RegistryUnavailable(
                    f"redis registry {self.url}: {op} failed: {type(exc).__name__}: {exc}"
                ) from exc

    async def _pipeline(self, build: Callable[[Any], None]) -> list[Any]:
        # transaction=False: no MULTI/EXEC (cross-slot in a cluster); one round trip per batch
        # on a standalone server, one batch per node (in parallel) on a cluster.
        pipe = self._client.pipeline(transaction=False)
        build(pipe)
        return list(await pipe.execute())

    async def _scripts(self, build: Callable[[Any, bool], None]) -> list[Any]:
        """Run a pipeline that contains scripts: EVALSHA, or EVAL if a node lacks the script.

        A node lacks it after a restart, a failover (the script cache is not replicated) or on
        first use. All our scripts and the commands batched with them are idempotent, so the
        whole batch is simply re-run with EVAL, which also caches the script on that node.
        """
        try:
            return await self._pipeline(lambda pipe: build(pipe, True))
        except NoScriptError:
            return await self._pipeline(lambda pipe: build(pipe, False))

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
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            # Housekeeping only: the lookup's answer is already correct without it.
            log.debug("redis registry %s: index cleanup failed: %r", self.url, exc)
