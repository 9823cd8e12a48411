"""The receipt STATUS table on Redis / Redis Cluster: the last state of each message and of each
of its devices, as ``Push.GetStatus`` reports it.

One HASH per message, ``<prefix>:st:{<message_id>}``, whose fields each hold one scalar:

- ``_state``: the message's last state; ``_labels``: its labels (JSON, first non-empty wins);
  ``_sender``: the sender its ACCEPTED receipt named (the only one GetStatus answers);
- per device ``s:<device>`` state, ``t:<device>`` updated_at_ms, ``e:<device>`` edge id,
  ``x:<device>`` detail and ``o:<device>`` the order in which devices were first seen
  (``_n`` counts them).

Each receipt is folded in by one Lua script, which applies the rule of
``pushplat.receipts.memory.MemoryReceipts`` (an ACKED device stays ACKED) on the server: writers in
different processes (the router, every edge) never lose each other's updates, and no
read-modify-write round trip is needed. The key's TTL restarts with every receipt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pushplat_client.v1 import push_pb2
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from pushplat.receipts.base import ReceiptEvent, State
from pushplat.redis_support import DEFAULT_PREFIX, RedisStore, Script, hash_tag, ttl_ms

DEFAULT_STATUS_TTL_S = 7 * 24 * 3600.0
_DELIVERED = int(State.DELIVERY_STATE_DELIVERED_TO_EDGE)
_ACCEPTED = int(State.DELIVERY_STATE_ACCEPTED)


class StatusUnavailable(Exception):
    """The status store cannot be reached or failed."""


# One call per message and flush: ARGV = key ttl ms, the ACKED state, labels JSON ('' for none),
# sender ('' for none), topic ('' for none), the DELIVERED_TO_EDGE and ACCEPTED states, then six
# values per receipt in order: state, device ('' for the message as a whole), at_ms, edge,
# detail, count. Mirrors MemoryReceipts._fold field by field; a topic message keeps counts
# (_edges, _written, _acked, d:<reason>, as receipts.merge_topic), never per-device fields.
_RECORD = Script(
    """
local key, acked, topic, delivered, accepted = KEYS[1], ARGV[2], ARGV[5], ARGV[6], ARGV[7]
if ARGV[3] ~= '' then redis.call('HSETNX', key, '_labels', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSETNX', key, '_sender', ARGV[4]) end
if topic ~= '' then redis.call('HSETNX', key, '_topic', topic) end
for i = 8, #ARGV, 6 do
  local state, device, detail = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  redis.call('HSET', key, '_state', state)
  if topic ~= '' then
    if state == delivered then
      if detail == 'fanout' then redis.call('HINCRBY', key, '_written', ARGV[i + 5])
      else redis.call('HINCRBY', key, '_edges', 1) end
    elseif state == acked then
      redis.call('HINCRBY', key, '_acked', math.max(tonumber(ARGV[i + 5]), 1))
    elseif state ~= accepted then
      if detail == '' then detail = 'state_' .. state end
      redis.call('HINCRBY', key, 'd:' .. detail, math.max(tonumber(ARGV[i + 5]), 1))
    end
  elseif device ~= '' then
    local current = redis.call('HGET', key, 's:' .. device)
    if not current then
      redis.call('HSET', key, 'o:' .. device, redis.call('HINCRBY', key, '_n', 1))
    end
    if current ~= acked or state == acked then
      redis.call('HSET', key, 's:' .. device, state, 't:' .. device, ARGV[i + 2], 'x:' .. device, detail)
      if ARGV[i + 3] ~= '' then redis.call('HSET', key, 'e:' .. device, ARGV[i + 3]) end
    end
  end
end
redis.call('PEXPIRE', key, ARGV[1])
return 1
"""
)


class RedisStatusStore(RedisStore):
    """Last states of messages and their devices, on a standalone Redis or a Redis Cluster."""

    kind = "status store"
    unavailable = StatusUnavailable
    log = logging.getLogger("pushplat.receipts")

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        url: str = "",
        ttl_seconds: float = DEFAULT_STATUS_TTL_S,
    ) -> None:
        super().__init__(client, prefix=prefix, url=url)
        if ttl_seconds <= 0:
            raise ValueError(f"status ttl must be positive, got {ttl_seconds}")
        self.ttl_seconds = ttl_seconds

    @classmethod
    def _url_options(cls, options: Mapping[str, str]) -> dict[str, Any]:
        # ?status_ttl=SECONDS: how long a message's status is kept after its last receipt.
        return {"ttl_seconds": float(options["status_ttl"])} if "status_ttl" in options else {}

    def key(self, message_id: str) -> str:
        return f"{self.prefix}:st:{hash_tag(message_id)}"

    async def record(self, receipts: Sequence[ReceiptEvent]) -> None:
        """Fold receipts into the table, in order: one script call per message, all in one
        pipelined round trip."""
        per_message: dict[str, list[ReceiptEvent]] = {}
        for r in receipts:
            if r.message_id:
                per_message.setdefault(r.message_id, []).append(r)
        if not per_message:
            return
        ttl = ttl_ms(self.ttl_seconds)
        acked = int(State.DELIVERY_STATE_ACKED)
        calls = []
        for message_id, events in per_message.items():
            labels = next((r.labels for r in events if r.labels), None)
            sender = next((r.sender_id for r in events if r.sender_id), "")
            topic = next((r.topic for r in events if r.topic), "")
            args: list[Any] = [
                ttl,
                acked,
                json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels else "",
                sender,
                topic,
                _DELIVERED,
                _ACCEPTED,
            ]
            for r in events:
                args += (int(r.state), r.device_id, r.at_ms, r.edge_id, r.detail, r.count)
            calls.append((self.key(message_id), args))

        def build(pipe: Any, cached: bool) -> None:
            for key, args in calls:
                _RECORD.queue(pipe, key, *args, cached=cached)

        # A NOSCRIPT retry re-applies the batch: each receipt again, in the same order, which
        # leaves the same state (an ack stays final).
        await self._guarded("record", lambda: self._scripts(build))

    async def status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        fields: dict[str, str] = await self._guarded("status", lambda: self._client.hgetall(self.key(message_id)))
        if "_state" not in fields or fields.get("_sender", "") != sender_id:
            return None
        response = push_pb2.GetStatusResponse(message_id=message_id, state=int(fields["_state"]))
        if "_labels" in fields:
            response.labels.update(json.loads(fields["_labels"]))
        if "_topic" in fields:
            counts = response.topic
            counts.topic = fields["_topic"]
            counts.edges_reached = int(fields.get("_edges", 0))
            counts.devices_written = int(fields.get("_written", 0))
            counts.devices_acked = int(fields.get("_acked", 0))
            for name, value in fields.items():
                if name.startswith("d:"):
                    counts.dropped[name[2:]] = int(value)
            return response
        devices = sorted(
            (name[2:] for name in fields if name.startswith("s:")),
            key=lambda device: int(fields.get(f"o:{device}", 0)),
        )
        for device in devices:
            response.devices.add(
                device_id=device,
                state=int(fields[f"s:{device}"]),
                updated_at_ms=int(fields.get(f"t:{device}", 0)),
                edge_id=fields.get(f"e:{device}", ""),
                detail=fields.get(f"x:{device}", ""),
            )
        return response
