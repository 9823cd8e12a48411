"""DeliveryServicer: routers hand batches to this edge, which queues them on device streams."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
from pushplat_client.v1 import message_pb2

from pushplat.config import Config
from pushplat.edge.hub import Hub
from pushplat.edge.session import GoAwayReason, Session, wire_size
from pushplat.edge.topics import EdgeTopics
from pushplat.logs import LogLimiter, kv
from pushplat.messages import is_expired, now_ms
from pushplat.metrics import DROPPED
from pushplat.topics.memory import MemorySubscriptions
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc

log = logging.getLogger("pushplat.edge")
Outcome = delivery_pb2.DeliverResponse.Outcome


class DeliveryServicer(delivery_pb2_grpc.DeliveryServicer):
    """The edge's side of the hand-off. deliver() and evict() serve the in-process link; Deliver
    and Evict are the same over gRPC for routers and edges in other processes."""

    def __init__(self, hub: Hub, edge_id: str, topics: EdgeTopics | None = None) -> None:
        self.hub = hub
        self.edge_id = edge_id
        self.topics = topics or EdgeTopics(Config(), MemorySubscriptions(), hub.get)
        # A slow device fills its queue for every message sent to it: one line a second per
        # kind, with the count held back, instead of one per message (the counter has them all).
        self._drop_log = LogLimiter(interval_seconds=1.0)
        self._dropped = {
            reason: DROPPED.labels(reason) for reason in ("expired", "no_session", "queue_full", "too_large")
        }

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
        if item.topic_change.version:  # a control record (edge/topics.py)
            return self.topics.change(item.device_id, item.topic_change)
        message = item.message
        if is_expired(message, now):
            self._dropped["expired"].inc()
            return Outcome.EXPIRED
        if item.topic:  # once per edge: every subscribed session here gets it
            self.topics.fanout(item.topic, message, self.push)
            return Outcome.QUEUED
        session = self.hub.get(item.device_id)
        if session is None or session.closed:
            self._dropped["no_session"].inc()
            return Outcome.NO_SESSION
        return self.push(session, message)

    def push(
        self, session: Session, message: message_pb2.Message, size: int | None = None, encoded: bytes | None = None
    ) -> int:
        """Queue one message on one session, as every message is (byte budget, frame cap,
        priorities; the topic fan-out queues each copy through here too)."""
        if session.closed:
            self._dropped["no_session"].inc()
            return Outcome.NO_SESSION
        lasting = message.requires_ack
        if lasting and (session.behind or message.message_id in session.in_flight):
            # Older at-least-once messages wait in the inbox for this session to catch up; this
            # one waits behind them, in order (or it was already pushed on this session).
            return Outcome.IN_INBOX
        outbound = session.outbound
        if size is None:
            size = wire_size(message)
        if size > outbound.frame_room:
            self._dropped["too_large"].inc()
            self._log_drop("too_large", session, message, size=size, limit=outbound.frame_room)
            return Outcome.TOO_LARGE
        if outbound.push(message, size, encoded):
            return Outcome.QUEUED
        if lasting:
            session.behind = True  # it is in the inbox: the session takes it once it has room
            return Outcome.IN_INBOX
        self._dropped["queue_full"].inc()
        self._log_drop("queue_full", session, message, queued_bytes=outbound.bytes, limit=outbound.limit_bytes)
        return Outcome.QUEUE_FULL

    def _log_drop(self, kind: str, session: Session, message: message_pb2.Message, **fields: int) -> None:
        allowed, suppressed = self._drop_log.allow(kind)
        if allowed:
            log.warning(
                kv(
                    f"deliver.{kind}",
                    device=session.device_id,
                    session=session.session_id,
                    message=message.message_id,
                    suppressed=suppressed or None,
                    **fields,
                )
            )
