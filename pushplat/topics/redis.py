"""Redis / Redis Cluster subscriptions: one hash per device, ``<prefix>:topics:{<device>}``.

Fields are the topic names (value: when subscribed, ms) plus ``#v``, the device's change
counter ('#' is not allowed in topic names). One key per device, hash-tagged by the device, so
every change is one single-slot script, and a device's topics are one HGETALL. The key's TTL is
the device memory window, extended on every change and every connect. Versions only order a
device's changes: a batch that is re-run after NOSCRIPT (one cluster node had not cached the
script) counts its changes twice, and every set operation in it is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pushplat.redis_support import RedisStore, Script, hash_tag, ttl_ms
from pushplat.topics.base import Change, Changed, Snapshot, Subscriptions, SubscriptionsUnavailable

VERSION_FIELD = "#v"

# ARGV: max topics, ttl ms, now ms, number of subscribes, want snapshot (0/1), then the
# subscribes, then the unsubscribes. Returns {version, subscribed, unsubscribed, full, count,
# snapshot}.
_CHANGE = Script(
    """
local max, ttl, now, nsub, want = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local count = redis.call('HLEN', KEYS[1])
if redis.call('HEXISTS', KEYS[1], '#v') == 1 then count = count - 1 end
local subscribed, unsubscribed, full = {}, {}, {}
for i = 6, 5 + nsub do
  local topic = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], topic) == 1 then
    subscribed[#subscribed + 1] = topic
  elseif count < max then
    redis.call('HSET', KEYS[1], topic, now)
    count = count + 1
    subscribed[#subscribed + 1] = topic
  else
    full[#full + 1] = topic
  end
end
for i = 6 + nsub, #ARGV do
  count = count - redis.call('HDEL', KEYS[1], ARGV[i])
  unsubscribed[#unsubscribed + 1] = ARGV[i]
end
local version = redis.call('HINCRBY', KEYS[1], '#v', 1)
redis.call('PEXPIRE', KEYS[1], ttl)
local topics = {}
if want == '1' then topics = redis.call('HKEYS', KEYS[1]) end
return {version, subscribed, unsubscribed, full, count, topics}
"""
)


class RedisSubscriptions(RedisStore, Subscriptions):
    kind = "subscription store"
    unavailable = SubscriptionsUnavailable
    log = logging.getLogger("pushplat.topics")

    def key(self, device_id: str) -> str:
        return f"{self.prefix}:topics:{hash_tag(device_id)}"

    async def change_many(
        self, changes: Sequence[Change], max_topics: int, ttl_seconds: float, snapshot: bool = False
    ) -> list[Changed]:
        if not changes:
            return []
        ttl, now = ttl_ms(ttl_seconds), self._now_ms()

        def build(pipe: Any, cached: bool) -> None:
            for change in changes:
                _CHANGE.queue(
                    pipe,
                    self.key(change.device_id),
                    max_topics,
                    ttl,
                    now,
                    len(change.subscribe),
                    "1" if snapshot else "0",
                    *change.subscribe,
                    *change.unsubscribe,
                    cached=cached,
                )

        rows = await self._guarded("change", lambda: self._scripts(build))
        return [
            Changed(
                list(sub),
                list(unsub),
                list(full),
                int(count),
                int(version),
                sorted(t for t in topics if t != VERSION_FIELD) if snapshot else None,
            )
            for version, sub, unsub, full, count, topics in rows
        ]

    async def get(self, device_id: str, touch_ttl_seconds: float = 0) -> Snapshot:
        key = self.key(device_id)

        def build(pipe: Any) -> None:
            pipe.hkeys(key)
            pipe.hget(key, VERSION_FIELD)
            if touch_ttl_seconds > 0:
                pipe.pexpire(key, ttl_ms(touch_ttl_seconds))

        fields, version, *_ = await self._guarded("get", lambda: self._pipeline(build))
        return Snapshot(sorted(f for f in fields if f != VERSION_FIELD), int(version or 0))

    async def forget(self, device_id: str) -> None:
        await self._guarded("forget", lambda: self._client.delete(self.key(device_id)))
