"""PushServicer: validates sends, stamps ids, and publishes to the lane for their priority.

A Send answers once the message is in its lane (fire-and-forget); it never reports a message
as accepted that the lane did not take.
"""

from __future__ import annotations

import logging

import grpc
from pushplat_client.v1 import message_pb2, push_pb2, push_pb2_grpc

from pushplat.auth import ApiKeyChecker
from pushplat.config import Config
from pushplat.idempotency import IdempotencyStore, IdempotencyUnavailable
from pushplat.logs import kv
from pushplat.messages import lane_of, new_message_id, now_ms
from pushplat.metrics import MESSAGES_IN, by_priority
from pushplat.queue import LaneProducer, QueueUnavailable
from pushplat.receipts import Receipts, State, receipt
from pushplat.registry import Registry, RegistryUnavailable
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.api")
_MESSAGES_IN = by_priority(MESSAGES_IN)


class InvalidSend(ValueError):
    """A SendRequest that can never succeed; the message says which field is wrong."""


class SendValidator:
    def __init__(self, config: Config) -> None:
        self.config = config

    def envelope(self, request: push_pb2.SendRequest) -> delivery_pb2.Envelope:
        """Validate request and build the Envelope to publish, or raise InvalidSend."""
        target = request.WhichOneof("target")
        if target is None or not getattr(request, target):
            raise InvalidSend("a target is required: set user_id or device_id")
        size = len(request.payload)
        if size > self.config.max_payload_bytes:
            raise InvalidSend(f"payload is {size} bytes; the limit is {self.config.max_payload_bytes} bytes")
        if not 0 <= request.ttl_seconds <= self.config.max_ttl_seconds:
            limit = self.config.max_ttl_seconds
            raise InvalidSend(f"ttl_seconds must be between 0 and {limit}, got {request.ttl_seconds}")
        if request.priority not in message_pb2.Priority.values():
            raise InvalidSend(f"unknown priority {request.priority}")
        if request.delivery not in message_pb2.DeliveryMode.values():
            raise InvalidSend(f"unknown delivery mode {request.delivery}")
        created = now_ms()
        ttl = request.ttl_seconds or self.config.default_ttl_seconds
        message = message_pb2.Message(
            message_id=new_message_id(),
            payload=request.payload,
            content_type=request.content_type,
            priority=request.priority or message_pb2.PRIORITY_NORMAL,
            created_at_ms=created,
            expires_at_ms=created + ttl * 1000,
            collapse_key=request.collapse_key,
            requires_ack=request.delivery == message_pb2.AT_LEAST_ONCE,
            labels=request.labels,
        )
        envelope = delivery_pb2.Envelope(message=message, delivery=request.delivery)
        setattr(envelope, target, getattr(request, target))
        return envelope


class PushServicer(push_pb2_grpc.PushServicer):
    def __init__(
        self,
        config: Config,
        producer: LaneProducer,
        *,
        idempotency: IdempotencyStore,
        receipts: Receipts,
        registry: Registry,
    ) -> None:
        self.config = config
        self.validator = SendValidator(config)
        self.producer = producer
        self.api_keys = ApiKeyChecker(config.api_keys)
        self.idempotency = idempotency
        self.receipts = receipts
        self.registry = registry

    async def Send(self, request: push_pb2.SendRequest, context: grpc.aio.ServicerContext) -> push_pb2.SendResponse:
        await self.api_keys.require(context)
        try:
            envelope = self.validator.envelope(request)
        except InvalidSend as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return await self._accept(request.idempotency_key, envelope, context)

    async def SendBatch(
        self, request: push_pb2.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SendBatchResponse:
        await self.api_keys.require(context)
        envelopes = []
        for index, item in enumerate(request.requests):
            try:
                envelopes.append(self.validator.envelope(item))
            except InvalidSend as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"requests[{index}]: {exc}")
        responses = []
        for item, envelope in zip(request.requests, envelopes, strict=True):
            responses.append(await self._accept(item.idempotency_key, envelope, context, accepted=len(responses)))
        return push_pb2.SendBatchResponse(responses=responses)

    async def GetStatus(
        self, request: push_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetStatusResponse:
        await self.api_keys.require(context)
        if not request.message_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message_id is required")
        status = await self.receipts.status(request.message_id)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no status for message {request.message_id}")
        return status

    async def GetPresence(
        self, request: push_pb2.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetPresenceResponse:
        await self.api_keys.require(context)
        if not request.user_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is required")
        try:
            routes = (await self.registry.lookup_users([request.user_id])).get(request.user_id, [])
        except RegistryUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}")
        return push_pb2.GetPresenceResponse(
            user_id=request.user_id,
            devices=[
                push_pb2.PresenceDevice(device_id=r.device_id, edge_id=r.edge_id, session_id=r.session_id)
                for r in sorted(routes, key=lambda r: r.device_id)
            ],
        )

    async def _accept(
        self, key: str, envelope: delivery_pb2.Envelope, context: grpc.aio.ServicerContext, accepted: int = 0
    ) -> push_pb2.SendResponse:
        """Claim the idempotency key (if any), publish, and answer; never report an unqueued message."""
        message = envelope.message
        if key:
            try:
                holder = await self.idempotency.claim(key, message.message_id, self.config.idempotency_window_seconds)
            except IdempotencyUnavailable as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"idempotency store unavailable: {exc}")
            if holder is not None:
                log.info(kv("send.duplicate", idempotency_key=key, message=holder))
                return push_pb2.SendResponse(message_id=holder, duplicate=True)
        lane = lane_of(message.priority)
        try:
            await self.producer.publish(lane, envelope)
        except QueueUnavailable as exc:
            if key:
                await self.idempotency.release(key, message.message_id)
            log.warning(kv("send.unavailable", message=message.message_id, error=str(exc)))
            done = f"; the first {accepted} of the batch were accepted" if accepted else ""
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"queue unavailable, message not accepted{done}: {exc}")
        _MESSAGES_IN[message.priority].inc()
        target = envelope.WhichOneof("target")
        await self.receipts.emit(
            [
                receipt(
                    message.message_id,
                    State.DELIVERY_STATE_ACCEPTED,
                    labels=message.labels,
                    **{target: getattr(envelope, target)},
                )
            ]
        )
        if log.isEnabledFor(logging.DEBUG):  # the hot path: skip formatting when not logged
            log.debug(kv("send.accepted", message=message.message_id, lane=lane, **{target: getattr(envelope, target)}))
        return push_pb2.SendResponse(message_id=message.message_id)
