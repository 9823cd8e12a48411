"""The router role: consume the priority lanes, look targets up, hand batches to edges."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import grpc
from pushplat_client.v1 import message_pb2, push_pb2

from pushplat.config import Config
from pushplat.edge_link import EdgeLink
from pushplat.inbox import Inbox
from pushplat.logs import kv
from pushplat.messages import is_expired, now_ms
from pushplat.metrics import DROPPED, LANE_LAG
from pushplat.queue import LaneConsumer, Record
from pushplat.receipts import Receipts, State, receipt
from pushplat.registry import Registry, Route
from pushplat.router.scheduler import LaneScheduler
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.router")

__all__ = ["RouterNode"]


class RouterNode:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        consumer: LaneConsumer,
        inbox: Inbox,
        receipts: Receipts,
        link: EdgeLink,
    ) -> None:
        self.config = config
        self.registry = registry
        self.inbox = inbox
        self.receipts = receipts
        self.consumer = consumer
        self.scheduler = LaneScheduler(buffer_limit=max(2 * config.router_batch_size, 64))
        self.edges = link
        self._task: asyncio.Task[None] | None = None
        self.poll_timeout = 0.5

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="router")

    async def pause(self) -> None:
        """Stop taking from the lanes (operators: hold delivery during maintenance; tests: build a backlog)."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def resume(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router")

    async def stop(self) -> None:
        await self.pause()
        await self.consumer.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            hungry = self.scheduler.hungry_lanes()
            if hungry:
                timeout = 0.0 if self.scheduler.buffered() else self.poll_timeout
                try:
                    self.scheduler.add(await self.consumer.fetch(hungry, self.config.router_batch_size, timeout))
                except Exception as exc:
                    failures += 1
                    log.warning(kv("router.fetch_failed", error=repr(exc), attempt=failures))
                    await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                    continue
            batch = self.scheduler.take(self.config.router_batch_size)
            if not batch:
                continue
            try:
                await self.route(batch)
                await self.consumer.commit(batch)
                failures = 0
            except Exception as exc:
                # Keep the batch uncommitted and retry: a registry blip must not lose messages.
                failures += 1
                log.warning(kv("router.route_failed", error=repr(exc), records=len(batch), attempt=failures))
                for lane_records in _by_lane(batch).values():
                    self.scheduler.buffers[lane_records[0].lane].extendleft(reversed(lane_records))
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def route(self, records: list[Record]) -> None:
        """Store at-least-once messages in their inboxes, then hand each record to the edge(s)
        holding its target, one Deliver call per edge."""
        now = now_ms()
        live: list[Record] = []
        events: list[push_pb2.Receipt] = []
        for record in records:
            message = record.envelope.message
            if is_expired(message, now):
                DROPPED.labels("expired").inc()
                events.append(
                    receipt(
                        message.message_id,
                        State.DELIVERY_STATE_EXPIRED,
                        labels=message.labels,
                        detail="expired before routing",
                    )
                )
            else:
                live.append(record)
                LANE_LAG.labels(record.lane).set(max(now - message.created_at_ms, 0) / 1000)
        device_ids = {r.envelope.device_id for r in live if r.envelope.WhichOneof("target") == "device_id"}
        user_ids = {r.envelope.user_id for r in live if r.envelope.WhichOneof("target") == "user_id"}
        lasting_users = {
            r.envelope.user_id
            for r in live
            if r.envelope.WhichOneof("target") == "user_id" and r.envelope.message.requires_ack
        }
        device_routes, user_routes, known_devices = await asyncio.gather(
            self.registry.lookup_devices(sorted(device_ids)) if device_ids else _empty_dict(),
            self.registry.lookup_users(sorted(user_ids)) if user_ids else _empty_dict(),
            self.inbox.devices_of(sorted(lasting_users)) if lasting_users else _empty_dict(),
        )
        per_edge: dict[str, list[delivery_pb2.Routed]] = defaultdict(list)
        to_store: list[tuple[list[str], message_pb2.Message]] = []
        for record in live:
            envelope, message = record.envelope, record.envelope.message
            routes: list[Route]
            if envelope.WhichOneof("target") == "device_id":
                route = device_routes.get(envelope.device_id)
                routes = [route] if route else []
                offline = [] if route else [envelope.device_id]
            else:
                routes = user_routes.get(envelope.user_id, [])
                online = {r.device_id for r in routes}
                offline = [d for d in known_devices.get(envelope.user_id, []) if d not in online]
            if not message.requires_ack:
                offline = []  # at-most-once keeps nothing for them: no route is a counted drop
            if message.requires_ack and (routes or offline):
                to_store.append(([*(r.device_id for r in routes), *offline], message))
            for device_id in offline:
                events.append(
                    receipt(
                        message.message_id,
                        State.DELIVERY_STATE_NO_ROUTE,
                        device_id=device_id,
                        labels=message.labels,
                        detail="offline; kept in inbox",
                    )
                )
            if not routes:
                if not offline:
                    DROPPED.labels("no_route").inc()
                    target = envelope.WhichOneof("target")
                    events.append(
                        receipt(
                            message.message_id,
                            State.DELIVERY_STATE_NO_ROUTE,
                            labels=message.labels,
                            detail="no connected device",
                            **{target: getattr(envelope, target)},
                        )
                    )
                continue
            for route in routes:
                per_edge[route.edge_id].append(
                    delivery_pb2.Routed(device_id=route.device_id, session_id=route.session_id, message=message)
                )
        if to_store:
            # Inbox first, in one round trip for the batch: once stored, a crash anywhere
            # after this loses nothing.
            for c in await self.inbox.put_many(to_store):
                detail = f"collapsed by {c.replaced_by}"
                events.append(receipt(c.message_id, State.DELIVERY_STATE_DROPPED, device_id=c.device_id, detail=detail))
        if per_edge:
            addresses = await self.registry.edge_addresses(sorted(per_edge))
            results = await asyncio.gather(
                *(self._deliver(edge_id, addresses.get(edge_id), items) for edge_id, items in per_edge.items())
            )
            for edge_events in results:
                events.extend(edge_events)
        if events:
            await self.receipts.emit(events)

    async def _deliver(self, edge_id: str, address: str | None, items: list[delivery_pb2.Routed]) -> list:
        if address is None:
            DROPPED.labels("edge_gone").inc(len(items))
            log.info(kv("router.edge_gone", edge=edge_id, messages=len(items)))
            return [_outcome_receipt(item, edge_id, NO_SESSION) for item in items]
        try:
            outcomes = await self.edges.deliver(edge_id, address, items)
        except Exception as exc:
            rpc = isinstance(exc, grpc.aio.AioRpcError)
            details = exc.details() if rpc else repr(exc)
            # The edge died or hung (or refused our internal credentials): its sessions'
            # registry entries expire; at-least-once messages wait in the inbox for the reconnect.
            DROPPED.labels("edge_unreachable").inc(len(items))
            log.warning(
                kv(
                    "router.deliver_failed",
                    edge=edge_id,
                    address=address,
                    messages=len(items),
                    code=exc.code().name if rpc else None,
                    error=details,
                )
            )
            return [_outcome_receipt(item, edge_id, NO_SESSION, "edge unreachable") for item in items]
        return [_outcome_receipt(item, edge_id, outcome) for item, outcome in zip(items, outcomes, strict=False)]


Outcome = delivery_pb2.DeliverResponse.Outcome
NO_SESSION = Outcome.NO_SESSION
_STATE_OF_OUTCOME = {
    Outcome.QUEUED: (State.DELIVERY_STATE_DELIVERED_TO_EDGE, ""),
    Outcome.NO_SESSION: (State.DELIVERY_STATE_NO_ROUTE, "device left the edge"),
    Outcome.QUEUE_FULL: (State.DELIVERY_STATE_DROPPED, "device queue full"),
    Outcome.EXPIRED: (State.DELIVERY_STATE_EXPIRED, "expired at the edge"),
}


def _outcome_receipt(item: delivery_pb2.Routed, edge_id: str, outcome: int, detail: str = "") -> push_pb2.Receipt:
    state, default_detail = _STATE_OF_OUTCOME.get(outcome, (State.DELIVERY_STATE_DROPPED, "unknown outcome"))
    if item.message.requires_ack and state == State.DELIVERY_STATE_NO_ROUTE:
        detail = (detail or default_detail) + "; kept in inbox"
    return receipt(
        item.message.message_id,
        state,
        device_id=item.device_id,
        edge_id=edge_id,
        labels=item.message.labels,
        detail=detail or default_detail,
    )


async def _empty_dict() -> dict:
    return {}


def _by_lane(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.lane].append(record)
    return grouped
