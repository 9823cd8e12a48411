"""Redis / Redis Cluster plumbing shared by every Redis-backed store (registry, inbox,
idempotency keys, receipt status): one URL syntax, one client set-up, one script runner and one
way of turning Redis failures into the store's own "unavailable" exception.

URLs: ``redis://[user:pass@]host:port/db``, ``rediss://...`` or
``redis+cluster://host:port[,host:port...]``. ``?prefix=NAME`` sets the key prefix (default
``pp``); the store options in ``STORE_OPTIONS`` (e.g. ``?status_ttl=``) are read by the store
that wants them and never reach redis-py, so every store can share one URL; any other query
parameter goes to redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from pushplat.messages import now_ms

T = TypeVar("T")

DEFAULT_PREFIX = "pp"
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 3.0
# In-flight operations per store. The asyncio cluster client RAISES MaxConnectionsError
# (instead of waiting) once a node has this many connections busy, so a reconnect storm on an
# edge (thousands of concurrent register calls) must be queued here, not handed to redis-py.
MAX_IN_FLIGHT = 100
# Cluster: how often a command/pipeline is retried while the topology is being rediscovered
# (a dead master, CLUSTERDOWN during an election). The cluster pipeline sleeps 0.25 s between
# attempts, so this rides out ~2 s; a longer failover surfaces as the store's "unavailable"
# error, and the next call after the promotion re-reads the topology and works again.
CLUSTER_RETRIES = 8
# Standalone: few, fast retries, so that ping() on a dead server fails in about a second.
STANDALONE_RETRIES = 2
# Query parameters that configure a pushplat store rather than the Redis connection.
STORE_OPTIONS = frozenset({"status_ttl", "inbox_max"})
# What a Redis call can raise when the server is unreachable, failing or over its limits.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


@dataclass(frozen=True)
class Script:
    """A Lua script run by EVALSHA with a fallback to EVAL (which re-caches it).

    ``keys`` is how many of the arguments given to ``queue`` are keys; all of them must hash to
    one slot (a Redis Cluster refuses a script that spans slots).
    """

    src: str
    keys: int = 1

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.src.encode()).hexdigest()

    def queue(self, pipe: Any, *keys_and_args: str | int | bytes, cached: bool) -> None:
        # execute_command rather than pipe.evalsha(): redis-py's cluster pipeline blocks the
        # evalsha() method (it cannot recover from NOSCRIPT on its own); RedisStore._scripts does.
        if cached:
            pipe.execute_command("EVALSHA", self.sha, self.keys, *keys_and_args)
        else:
            pipe.execute_command("EVAL", self.src, self.keys, *keys_and_args)


# Index add/extend on a ZSET of members scored by expiry ms (KEYS[1]; ARGV member, expiry ms,
# key ttl ms): scores only grow (a late, slower writer never shortens a member), and the index
# key lives at least as long as its longest-lived member. PEXPIRE GT is not used because it
# refuses to put a TTL on a key that has none (a fresh ZSET).
INDEX_ADD = Script(
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


def ttl_ms(ttl_seconds: float) -> int:
    # PX/PEXPIRE reject 0 and negatives; the shortest meaningful TTL is 1 ms.
    return max(1, round(ttl_seconds * 1000))


def hash_tag(ident: str) -> str:
    """``{ident}`` for a key, escaped so that it is always the key's whole hash tag.

    Redis hashes the text between the FIRST ``{`` and the next ``}``, and the whole key when that
    is empty. An id that is empty or contains braces would otherwise give the keys of one owner
    (``...{id}:a``, ``...{id}:b``) different slots, and a multi-key script a CROSSSLOT error.
    Percent-escaping ``%``, ``{`` and ``}`` (and writing the empty id as ``%``) keeps ids
    distinct and leaves ordinary ids readable.
    """
    escaped = ident.replace("%", "%25").replace("{", "%7B").replace("}", "%7D") or "%"
    return f"{{{escaped}}}"


def redact(url: str) -> str:
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


@dataclass(frozen=True)
class RedisTarget:
    """A client for a Redis URL, with the key prefix and store options that the URL names."""

    client: Redis | RedisCluster
    prefix: str
    url: str  # password masked
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    @classmethod
    def from_url(cls, url: str, kind: str, *, decode_responses: bool = True) -> RedisTarget:
        """Parse a store URL (see the module doc); kind names the store in error messages.

        decode_responses=False is for stores that keep binary values (serialized protobufs).
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = DEFAULT_PREFIX
        options: dict[str, str] = {}
        passthrough = []
        for key, value in query:
            if key == "prefix":
                prefix = value
            elif key in STORE_OPTIONS:
                options[key] = value
            else:
                passthrough.append((key, value))
        common: dict[str, Any] = {
            "decode_responses": decode_responses,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": SOCKET_TIMEOUT_S,
        }
        if parts.scheme in ("redis", "rediss"):
            client_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passthrough), ""))
            retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), STANDALONE_RETRIES)
            client: Redis | RedisCluster = Redis.from_url(client_url, retry=retry, **common)
        elif parts.scheme == "redis+cluster":
            if parts.path not in ("", "/", "/0"):
                raise ValueError(f"{kind} URL {redact(url)!r}: a Redis Cluster has only database 0")
            userinfo, at, hosts = parts.netloc.rpartition("@")
            nodes = [_split_host_port(h) for h in hosts.split(",") if h]
            if not nodes:
                raise ValueError(f"{kind} URL {redact(url)!r} names no cluster node")
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
            raise ValueError(f"not a Redis {kind} URL: {redact(url)!r}")
        return cls(client, prefix, redact(url), options)


class RedisStore:
    """Base of a Redis-backed store: its client and key prefix, the in-flight cap, pipelines
    with scripts, and the mapping of Redis failures to the store's ``unavailable`` exception."""

    kind: ClassVar[str] = "store"  # names the store in messages: "redis <kind> <url>: ..."
    unavailable: ClassVar[type[Exception]] = ConnectionError
    log: ClassVar[logging.Logger] = logging.getLogger("pushplat.redis")
    # False for stores that keep binary values (serialized protobufs) and decode replies themselves.
    decode_responses: ClassVar[bool] = True

    def __init__(self, client: Redis | RedisCluster, *, prefix: str = DEFAULT_PREFIX, url: str = "") -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            # A brace in the prefix would become the hash tag of EVERY key: one hot slot.
            raise ValueError(f"invalid {self.kind} key prefix {prefix!r}: must be non-empty and contain no braces")
        self._client = client
        self._cluster = isinstance(client, RedisCluster)
        self.prefix = prefix
        self.url = redact(url) if url else repr(client)
        self._gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    @classmethod
    def from_url(cls, url: str, **defaults: Any) -> Self:
        """The store for a URL in the syntax of this module's doc; the URL's options win over defaults."""
        target = RedisTarget.from_url(url, cls.kind, decode_responses=cls.decode_responses)
        return cls(target.client, prefix=target.prefix, url=url, **{**defaults, **cls._url_options(target.options)})

    @classmethod
    def _url_options(cls, options: Mapping[str, str]) -> dict[str, Any]:
        """Constructor arguments from the store options of the URL (see ``STORE_OPTIONS``)."""
        return {}

    @property
    def client(self) -> Redis | RedisCluster:
        return self._client

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
        except REDIS_ERRORS as exc:  # closing a dead client must not fail shutdown
            self.log.debug("closing redis %s %s: %r", self.kind, self.url, exc)

    # -- for subclasses ---------------------------------------------------------------------------

    @staticmethod
    def _now_ms() -> int:
        return now_ms()

    async def _guarded(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one store operation under the in-flight cap, mapping Redis failures."""
        async with self._gate:
            try:
                return await call()
            except REDIS_ERRORS as exc:
                # redis-py has already retried (and, in a cluster, re-read the topology); what
                # is left is an outage as far as the caller is concerned.
                raise self.unavailable(
                    f"redis {self.kind} {self.url}: {op} failed: {type(exc).__name__}: {exc}"
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
        first use. All scripts and the commands batched with them must be idempotent (or the
        batch harmless to repeat): the whole batch is simply re-run with EVAL, which also caches
        the script on that node.
        """
        try:
            return await self._pipeline(lambda pipe: build(pipe, True))
        except NoScriptError:
            return await self._pipeline(lambda pipe: build(pipe, False))
