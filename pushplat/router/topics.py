"""TopicRouting: the router's share of topics. It never enumerates subscribers.

- A topic message goes once to every live edge (the registry's edge index), each of which fans
  it out to its own subscribed sessions: a broadcast costs the router O(edges), whatever the
  number of devices.
- A control record (a device's subscriptions changed, see edge/topics.py) goes to the device's
  edge, through the same per-edge queue as the device's messages, so it stays in order with them.

Neither has a per-device receipt here: the edge reached is the topic message's receipt, and
control records have none.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import NamedTuple

from pushplat_client.v1 import push_pb2

from pushplat.metrics import DROPPED
from pushplat.receipts import State, receipt
from pushplat.registry import Registry
from pushplat.router.commits import Entry
from pushplat.router.edges import Delivery

# How long the list of live edges is reused: a new edge gets topic messages within this.
LIVE_EDGES_SECONDS = 1.0
NO_ROUTE = State.DELIVERY_STATE_NO_ROUTE
_DROPPED_NO_EDGE = DROPPED.labels("no_edge")


class TopicPlan(NamedTuple):
    per_edge: dict[str, list[Delivery]]
    addresses: dict[str, str]
    plans: list[tuple[Entry, int]]
    finished: list[Entry]
    events: list[push_pb2.Receipt]


class TopicRouting:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._edges: dict[str, str] = {}
        self._edges_until = 0.0

    async def live_edges(self) -> dict[str, str]:
        now = time.monotonic()
        if now >= self._edges_until:
            self._edges = await self.registry.live_edges()
            self._edges_until = now + LIVE_EDGES_SECONDS
        return self._edges

    async def plan(self, entries: list[Entry]) -> TopicPlan:
        """Deliveries for topic messages and control records (nothing is settled here)."""
        per_edge: dict[str, list[Delivery]] = defaultdict(list)
        plans: list[tuple[Entry, int]] = []
        finished: list[Entry] = []
        events: list[push_pb2.Receipt] = []
        topical = [e for e in entries if e.record.envelope.WhichOneof("target") == "topic"]  # type: ignore[union-attr]
        controls = [e for e in entries if e.record.envelope.HasField("topic_change")]  # type: ignore[union-attr]
        edges = await self.live_edges() if topical else {}
        routes = (
            await self.registry.lookup_devices(sorted({e.record.envelope.device_id for e in controls}))  # type: ignore[union-attr]
            if controls
            else {}
        )
        for entry in topical:
            envelope = entry.record.envelope  # type: ignore[union-attr]
            message = envelope.message
            if not edges:
                _DROPPED_NO_EDGE.inc()
                finished.append(entry)
                events.append(
                    receipt(
                        message.message_id, NO_ROUTE, labels=message.labels, detail="no_live_edge", topic=envelope.topic
                    )
                )
                continue
            size = message.ByteSize()
            for edge_id in edges:
                per_edge[edge_id].append(Delivery(entry.lane, "", "", message, entry, topic=envelope.topic, size=size))
            plans.append((entry, len(edges)))
        for entry in controls:
            envelope = entry.record.envelope  # type: ignore[union-attr]
            route = routes.get(envelope.device_id)
            if route is None:
                finished.append(entry)  # offline: its edge restores from the store on connect
                continue
            per_edge[route.edge_id].append(
                Delivery(entry.lane, route.device_id, route.session_id, envelope.message, entry, envelope.topic_change)
            )
            plans.append((entry, 1))
        return TopicPlan(per_edge, dict(edges), plans, finished, events)
