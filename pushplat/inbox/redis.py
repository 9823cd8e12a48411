"""Redis / Redis Cluster inbox.

Each device's inbox is four keys that share the device's hash tag, so one Lua script can change
all of them atomically, also in a cluster (``<prefix>:ib:{<device>}:<suffix>``):

- ``:z``  ZSET message_id -> insertion sequence: the order of the inbox, oldest first;
- ``:m``  HASH message_id -> serialized ``Message``;
- ``:x``  ZSET message_id -> expires_at_ms (only messages that expire), to purge expired ones;
- ``:c``  HASH of the collapse index, both ways: ``k:<collapse_key>`` -> message_id and
  ``i:<message_id>`` -> collapse_key (so removing a message also clears its collapse entry).

Every write extends the TTL of all four keys to at least the message's remaining lifetime, so
an abandoned inbox disappears on its own once its last message has expired. A device's users
are a ZSET ``<prefix>:udev:{<user>}`` of device ids scored by enrollment expiry (ms), and the
user a device is bound to is the string ``<prefix>:ib:{<device>}:o`` (TTL: the memory window).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pushplat_client.v1 import message_pb2
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from pushplat.inbox.base import Collapsed, Inbox, InboxUnavailable
from pushplat.logs import LogLimiter, kv
from pushplat.metrics import DROPPED, INBOX_WAIT_SHORT
from pushplat.redis_support import DEFAULT_PREFIX, INDEX_ADD, RedisStore, Script, hash_tag, ttl_ms

DEFAULT_MAX_PER_DEVICE = 10_000
# A message that never expires (expires_at_ms == 0) keeps its inbox this long after its put.
NO_EXPIRY_TTL_MS = 28 * 24 * 3600 * 1000
# The keys outlive their newest message by this much, so a clock skew between the writer and
# Redis never removes a message before it expires.
TTL_SLACK_MS = 60_000

# Shared by the scripts: remove one message from every structure; 1 if it was in the inbox.
_DROP = """
local z, m, x, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function drop(id)
  local had = redis.call('ZREM', z, id)
  redis.call('HDEL', m, id)
  redis.call('ZREM', x, id)
  local ck = redis.call('HGET', c, 'i:' .. id)
  if ck then
    redis.call('HDEL', c, 'i:' .. id)
    if redis.call('HGET', c, 'k:' .. ck) == id then
      redis.call('HDEL', c, 'k:' .. ck)
    end
  end
  return had
end
"""

# ARGV: message_id, body, collapse_key ('' for none), expires_at_ms (0: never), max size, key ttl.
# Returns {trimmed, [collapsed id]}. A re-put of the same id keeps its place and collapses nothing.
_PUT = Script(
    _DROP
    + """
local id, ck = ARGV[1], ARGV[3]
local result = {0}
if ck ~= '' then
  local older = redis.call('HGET', c, 'k:' .. ck)
  if older and older ~= id and drop(older) == 1 then
    result[2] = older
  end
end
if not redis.call('ZSCORE', z, id) then
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local seq = 1
  if last[2] then seq = tonumber(last[2]) + 1 end
  redis.call('ZADD', z, seq, id)
end
redis.call('HSET', m, id, ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', x, ARGV[4], id)
else
  redis.call('ZREM', x, id)
end
local prev = redis.call('HGET', c, 'i:' .. id)
if prev and prev ~= ck and redis.call('HGET', c, 'k:' .. prev) == id then
  redis.call('HDEL', c, 'k:' .. prev)
end
if ck ~= '' then
  redis.call('HSET', c, 'k:' .. ck, id, 'i:' .. id, ck)
else
  redis.call('HDEL', c, 'i:' .. id)
end
local over = redis.call('ZCARD', z) - tonumber(ARGV[5])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', z, 0, over - 1)) do
    result[1] = result[1] + drop(old)
  end
end
local ttl = tonumber(ARGV[6])
for _, key in ipairs(KEYS) do
  local pttl = redis.call('PTTL', key)
  if pttl ~= -2 and pttl < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return result
""",
    keys=4,
)

# ARGV: message ids. Returns the ids that were in the inbox.
_ACK = Script(
    _DROP
    + """
local removed = {}
for _, id in ipairs(ARGV) do
  if drop(id) == 1 then removed[#removed + 1] = id end
end
return removed
""",
    keys=4,
)

# Bind a device to a user (KEYS[1] the owner key; ARGV user, ttl ms): false when bound (or
# refreshed) now, else the user who holds it, unchanged.
_BIND = Script(
    """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
)

# ARGV: now (ms), limit. Purges expired messages, then returns
# {purged, size after the purge, bodies of the oldest `limit` messages}.
_PENDING = Script(
    _DROP
    + """
local purged = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', x, '-inf', ARGV[1])) do
  purged = purged + drop(id)
end
local bodies = {}
local limit = tonumber(ARGV[2])
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGE', z, 0, limit - 1)) do
    local body = redis.call('HGET', m, id)
    if body then bodies[#bodies + 1] = body end
  end
end
return {purged, redis.call('ZCARD', z), bodies}
""",
    keys=4,
)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisInbox(RedisStore, Inbox):
    """Inbox on a standalone Redis or a Redis Cluster (see the module doc for the keys)."""

    kind = "inbox"
    unavailable = InboxUnavailable
    log = logging.getLogger("pushplat.inbox")
    decode_responses = False  # bodies are serialized protobufs: raw bytes, never text

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "",
        max_per_device: int | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ) -> None:
        super().__init__(client, prefix=prefix, url=url)
        self.max_per_device = DEFAULT_MAX_PER_DEVICE if max_per_device is None else max_per_device
        if self.max_per_device < 1:
            raise ValueError(f"inbox max size must be at least 1, got {self.max_per_device}")
        # WAIT after each put_many (see _queue_wait); 0: replication stays asynchronous.
        self.wait_replicas = max(wait_replicas, 0)
        self.wait_timeout_ms = max(wait_timeout_ms, 1)
        self._wait_log = LogLimiter(interval_seconds=10.0)

    @classmethod
    def _url_options(cls, options: Mapping[str, str]) -> dict[str, Any]:
        # ?inbox_max=N bounds each device's inbox.
        return {"max_per_device": int(options["inbox_max"])} if "inbox_max" in options else {}

    # -- key naming (public so tests and tools can check slots) ---------------------------------

    def device_keys(self, device_id: str) -> tuple[str, str, str, str]:
        """Order, bodies, expiries and collapse index of one device: one hash tag, one slot."""
        base = f"{self.prefix}:ib:{hash_tag(device_id)}"
        return f"{base}:z", f"{base}:m", f"{base}:x", f"{base}:c"

    def owner_key(self, device_id: str) -> str:
        """The user the device is bound to; same slot as the device's inbox."""
        return f"{self.prefix}:ib:{hash_tag(device_id)}:o"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:udev:{hash_tag(user_id)}"

    # -- Inbox ----------------------------------------------------------------------------------

    async def put(self, device_ids: Sequence[str], message: message_pb2.Message) -> list[str]:
        return [c.message_id for c in await self.put_many([(device_ids, message)])]

    async def put_many(self, entries: Sequence[tuple[Sequence[str], message_pb2.Message]]) -> list[Collapsed]:
        """Every (devices, message) entry in one pipelined round trip, in order."""
        now = self._now_ms()
        calls = []
        for device_ids, message in entries:
            body = message.SerializeToString()
            key_ttl = max(message.expires_at_ms - now, 1) + TTL_SLACK_MS if message.expires_at_ms else NO_EXPIRY_TTL_MS
            calls += [(device_id, message, body, key_ttl) for device_id in dict.fromkeys(device_ids)]
        if not calls:
            return []

        def build(pipe: Any, cached: bool) -> None:
            for device_id, message, body, key_ttl in calls:
                _PUT.queue(
                    pipe,
                    *self.device_keys(device_id),
                    message.message_id,
                    body,
                    message.collapse_key,
                    message.expires_at_ms,
                    self.max_per_device,
                    key_ttl,
                    cached=cached,
                )
            if self.wait_replicas:
                self._queue_wait(pipe, [device_id for device_id, *_ in calls])

        async def run() -> list[Any]:
            if self.wait_replicas and self._cluster:
                await self._client.initialize()  # the slot map, for _queue_wait (at once once loaded)
            # A NOSCRIPT retry re-runs puts that already ran: harmless (a re-put changes nothing),
            # but the re-run does not report what the first run collapsed.
            return await self._scripts(build)

        results = await self._guarded("put", run)
        if self.wait_replicas:
            self._count_waits(results[len(calls) :])
            results = results[: len(calls)]
        replaced: list[Collapsed] = []
        trimmed = 0
        for (device_id, message, _, _), result in zip(calls, results, strict=True):
            trimmed += int(result[0])
            replaced.extend(Collapsed(_text(older), message.message_id, device_id) for older in result[1:])
        if trimmed:
            DROPPED.labels("inbox_full").inc(trimmed)
        return replaced

    async def ack(self, device_id: str, message_ids: Sequence[str]) -> list[str]:
        if not message_ids:
            return []
        keys = self.device_keys(device_id)
        results = await self._guarded(
            "ack", lambda: self._scripts(lambda pipe, cached: _ACK.queue(pipe, *keys, *message_ids, cached=cached))
        )
        return [_text(mid) for mid in results[0]]

    async def ack_many(self, entries: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
        """Every device's acks in one pipelined round trip (one batch per node in a cluster)."""
        calls = [(self.device_keys(device_id), ids) for device_id, ids in entries if ids]
        if not calls:
            return [[] for _ in entries]

        def build(pipe: Any, cached: bool) -> None:
            for keys, ids in calls:
                _ACK.queue(pipe, *keys, *ids, cached=cached)

        results = iter(await self._guarded("ack", lambda: self._scripts(build)))
        return [[_text(mid) for mid in next(results)] if ids else [] for _, ids in entries]

    async def pending(self, device_id: str, limit: int = 1000) -> list[message_pb2.Message]:
        _, bodies = await self._pending("pending", device_id, limit)
        return [message_pb2.Message.FromString(body) for body in bodies]

    async def size(self, device_id: str) -> int:
        size, _ = await self._pending("size", device_id, 0)
        return size

    async def enroll(self, user_id: str, device_id: str, ttl_seconds: float) -> str | None:
        ttl = ttl_ms(ttl_seconds)
        owner_key = self.owner_key(device_id)

        def bind(pipe: Any, cached: bool) -> None:
            _BIND.queue(pipe, owner_key, user_id, ttl, cached=cached)

        # Two round trips: the device's slot and the user's differ, and the user's list must
        # not name a device that another user holds (the router stores user messages there).
        [owner] = await self._guarded("enroll", lambda: self._scripts(bind))
        if owner is not None:
            return _text(owner)
        expires = self._now_ms() + ttl

        def index(pipe: Any, cached: bool) -> None:
            INDEX_ADD.queue(pipe, self.user_key(user_id), device_id, expires, ttl + TTL_SLACK_MS, cached=cached)

        await self._guarded("enroll", lambda: self._scripts(index))
        return None

    async def devices_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}
        now = self._now_ms()

        def build(pipe: Any) -> None:
            for user_id in users:
                key = self.user_key(user_id)
                pipe.zrangebyscore(key, f"({now}", "+inf")
                # Housekeeping in the same round trip: members whose enrollment has lapsed.
                pipe.zremrangebyscore(key, "-inf", now)

        results = await self._guarded("devices_of", lambda: self._pipeline(build))
        return {user_id: [_text(d) for d in results[2 * i]] for i, user_id in enumerate(users)}

    # -- internals ------------------------------------------------------------------------------

    def _queue_wait(self, pipe: Any, device_ids: list[str]) -> None:
        """WAIT counts the replicas that have every write made so far on ITS connection, so it
        must follow the puts on the connection that sent them: at the end of the pipeline on a
        standalone server, and once per node in a cluster (whose pipeline sends each node's
        commands, in order, on one connection of that node)."""
        if not self._cluster:
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            return
        nodes = {}
        for device_id in device_ids:
            node = self._client.get_node_from_key(self.device_keys(device_id)[0])
            nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms, target_nodes=node)

    def _count_waits(self, acked: list[Any]) -> None:
        short = sum(1 for replicas in acked if int(replicas) < self.wait_replicas)
        if not short:
            return
        INBOX_WAIT_SHORT.inc(short)
        allowed, suppressed = self._wait_log.allow("short")
        if allowed:
            self.log.warning(
                kv(
                    "inbox.wait_short",
                    url=self.url,
                    wanted=self.wait_replicas,
                    acked=min(int(r) for r in acked),
                    timeout_ms=self.wait_timeout_ms,
                    suppressed=suppressed or None,
                    detail="a failover now may lose these inbox writes",
                )
            )

    async def _pending(self, op: str, device_id: str, limit: int) -> tuple[int, list[bytes]]:
        keys, now = self.device_keys(device_id), self._now_ms()
        results = await self._guarded(
            op, lambda: self._scripts(lambda pipe, cached: _PENDING.queue(pipe, *keys, now, limit, cached=cached))
        )
        purged, size, bodies = results[0]
        if purged:
            DROPPED.labels("expired").inc(int(purged))
        return int(size), list(bodies)
