"""DeliveryServicer: routers hand batches to this edge, which queues them on device streams."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from pushplat.edge.hub import Hub
from pushplat.edge.session import GoAwayReason
from pushplat.logs import kv
from pushplat.messages import is_expired, now_ms
from pushplat.metrics import DROPPED
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc

log = logging.getLogger("pushplat.edge")
Outcome = delivery_pb2.DeliverResponse.Outcome


class DeliveryServicer(delivery_pb2_grpc.DeliveryServicer):
    """The edge's side of the hand-off. deliver() and evict() serve the in-process link; Deliver
    and Evict are the same over gRPC for routers and edges in other processes."""

    def __init__(self, hub: Hub, edge_id: str) -> None:
        self.hub = hub
        self.edge_id = edge_id

    async def Deliver(
        self, request: delivery_pb2.DeliverRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.DeliverResponse:
        return delivery_pb2.DeliverResponse(outcomes=self.deliver(request.edge_id, request.items))

    async def Evict(
        self, request: delivery_pb2.EvictRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.EvictResponse:
        return delivery_pb2.EvictResponse(evicted=self.evict(request))

    def deliver(self, edge_id: str, items: Sequence[delivery_pb2.Routed]) -> list[int]:
        if edge_id and edge_id != self.edge_id:
            # A stale route: the registry named an edge that has since restarted on this address.
            return [Outcome.NO_SESSION] * len(items)
        now = now_ms()
        return [self.deliver_one(item, now) for item in items]

    def evict(self, request: delivery_pb2.EvictRequest) -> bool:
        session = self.hub.get(request.device_id)
        if session is None or session.session_id != request.session_id or session.closed:
            return False
        detail = f"a newer connection for this device took over on edge {request.replaced_by_edge_id}"
        session.go_away(GoAwayReason.REPLACED, 0, detail, grace_seconds=0)
        session.close("replaced")
        log.info(
            kv(
                "session.replaced_elsewhere",
                device=request.device_id,
                session=request.session_id,
                by_edge=request.replaced_by_edge_id,
            )
        )
        return True

    def deliver_one(self, item: delivery_pb2.Routed, now: int) -> int:
        if is_expired(item.message, now):
            DROPPED.labels("expired").inc()
            return Outcome.EXPIRED
        session = self.hub.get(item.device_id)
        if session is None or session.closed:
            DROPPED.labels("no_session").inc()
            return Outcome.NO_SESSION
        if not session.outbound.push(item.message):
            DROPPED.labels("queue_full").inc()
            log.warning(
                kv(
                    "deliver.queue_full",
                    device=item.device_id,
                    session=session.session_id,
                    message=item.message.message_id,
                    limit=session.outbound.limit,
                )
            )
            return Outcome.QUEUE_FULL
        return Outcome.QUEUED
