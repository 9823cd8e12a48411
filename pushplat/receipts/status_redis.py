"""The receipt STATUS table on Redis / Redis Cluster: the last state of each message and of each
of its devices, as ``Push.GetStatus`` reports it.

One HASH per message, ``<prefix>:st:{<message_id>}``, whose fields each hold one scalar:

- ``_state``: the message's last state; ``_labels``: its labels (JSON, first non-empty wins);
  ``_sender``: the sender its ACCEPTED receipt named (the only one GetStatus answers);
- per device ``s:<device>`` state, ``t:<device>`` updated_at_ms, ``e:<device>`` edge id,
  ``x:<device>`` detail and ``o:<device>`` the order in which devices were first seen
  (``_n`` counts them).

Each receipt is folded in by one Lua script, which applies the rule of
``pushplat.receipts.base.merge_status`` (an ACKED device stays ACKED) on the server: writers in
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

from pushplat.receipts.base import State
from pushplat.redis_support import DEFAULT_PREFIX, RedisStore, Script, hash_tag, ttl_ms

DEFAULT_STATUS_TTL_S = 7 * 24 * 3600.0


class StatusUnavailable(Exception):
    """The status store cannot be reached or failed."""


# ARGV: state, device ('' for the message as a whole), at_ms, edge, detail, labels JSON ('' for
# none), key ttl ms, the ACKED state, sender ('' for none). Mirrors merge_status field by field.
_RECORD = Script(
    """
local key, state, device = KEYS[1], ARGV[1], ARGV[2]
if ARGV[6] ~= '' then redis.call('HSETNX', key, '_labels', ARGV[6]) end
if ARGV[9] ~= '' then redis.call('HSETNX', key, '_sender', ARGV[9]) end
redis.call('HSET', key, '_state', state)
if device ~= '' then
  local current = redis.call('HGET', key, 's:' .. device)
  if not current then
    redis.call('HSET', key, 'o:' .. device, redis.call('HINCRBY', key, '_n', 1))
  end
  if current ~= ARGV[8] or state == ARGV[8] then
    redis.call('HSET', key, 's:' .. device, state, 't:' .. device, ARGV[3], 'x:' .. device, ARGV[5])
    if ARGV[4] ~= '' then redis.call('HSET', key, 'e:' .. device, ARGV[4]) end
  end
end
redis.call('PEXPIRE', key, ARGV[7])
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

    async def record(self, receipts: Sequence[push_pb2.Receipt]) -> None:
        """Fold receipts into the table, in order (one pipelined round trip)."""
        todo = [r for r in receipts if r.message_id]
        if not todo:
            return
        ttl = ttl_ms(self.ttl_seconds)
        acked = State.DELIVERY_STATE_ACKED

        def build(pipe: Any, cached: bool) -> None:
            for r in todo:
                labels = json.dumps(dict(r.labels), sort_keys=True, separators=(",", ":")) if r.labels else ""
                _RECORD.queue(
                    pipe,
                    self.key(r.message_id),
                    int(r.state),
                    r.device_id,
                    r.at_ms,
                    r.edge_id,
                    r.detail,
                    labels,
                    ttl,
                    int(acked),
                    r.sender_id,
                    cached=cached,
                )

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
