"""PushServicer: validates sends, stamps ids, and publishes to the lane for their priority.

A Send answers once the message is in its lane (fire-and-forget); it never reports a message
as accepted that the lane did not take. Every call is made as a sender (the API key's
identity): idempotency keys, message status and rate limits are per sender.
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import grpc
from pushplat_client.v1 import message_pb2, push_pb2, push_pb2_grpc

from pushplat.api.ratelimit import SenderRateLimiter
from pushplat.auth import ApiKeyChecker
from pushplat.config import Config
from pushplat.idempotency import Claim, IdempotencyStore, IdempotencyUnavailable
from pushplat.limits import (
    MAX_BATCH_REQUESTS,
    LimitExceeded,
    check_id,
    check_key,
    check_labels,
)
from pushplat.logs import clip, kv
from pushplat.messages import lane_of, new_message_id, now_ms
from pushplat.metrics import LIMITS_HIT, MESSAGES_IN, by_priority
from pushplat.queue import LaneProducer, QueueUnavailable
from pushplat.receipts import Receipts, State, receipt
from pushplat.registry import Registry, RegistryUnavailable
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.api")
_MESSAGES_IN = by_priority(MESSAGES_IN)
RETRY_AFTER_KEY = "retry-after-ms"


class InvalidSend(ValueError):
    """A SendRequest that can never succeed; the message says which field is wrong."""


def request_fingerprint(request: push_pb2.SendRequest) -> str:
    """What makes two Sends "the same request" for an idempotency key: every field but the key."""
    body = push_pb2.SendRequest()
    body.CopyFrom(request)
    body.ClearField("idempotency_key")
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()[:32]


class Prepared(NamedTuple):
    """A validated send whose idempotency key (if any) is claimed: the envelope to publish,
    or, for a repeat of an earlier request, that request's response."""

    key: str
    claim: Claim | None
    outcome: delivery_pb2.Envelope | push_pb2.SendResponse


class SendValidator:
    def __init__(self, config: Config) -> None:
        self.config = config

    def envelope(self, request: push_pb2.SendRequest) -> delivery_pb2.Envelope:
        """Validate request and build the Envelope to publish, or raise InvalidSend / LimitExceeded."""
        target = request.WhichOneof("target")
        if target is None or not getattr(request, target):
            raise InvalidSend("a target is required: set user_id or device_id")
        check_id(target, getattr(request, target))
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
        check_key("idempotency_key", request.idempotency_key)
        check_key("collapse_key", request.collapse_key)
        check_key("content_type", request.content_type)
        check_labels(request.labels)
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
        self.rate = SenderRateLimiter(config.send_rate, config.send_burst)
        self.idempotency = idempotency
        self.receipts = receipts
        self.registry = registry

    async def Send(self, request: push_pb2.SendRequest, context: grpc.aio.ServicerContext) -> push_pb2.SendResponse:
        sender = await self.api_keys.require(context)
        await self._throttle(sender, 1, context)
        try:
            envelope = self.validator.envelope(request)
        except (InvalidSend, LimitExceeded) as exc:
            await self._invalid(exc, context)
        return await self._accept(sender, request, envelope, context)

    async def SendBatch(
        self, request: push_pb2.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SendBatchResponse:
        sender = await self.api_keys.require(context)
        count = len(request.requests)
        if count > MAX_BATCH_REQUESTS:
            await self._invalid(
                LimitExceeded(
                    "send_batch",
                    f"SendBatch carries {count} requests; the limit is {MAX_BATCH_REQUESTS}: "
                    "split it into smaller batches",
                ),
                context,
            )
        if not self.rate.fits(count):
            await self._invalid(
                LimitExceeded(
                    "send_rate",
                    f"SendBatch carries {count} requests, more than this sender's burst of {self.rate.burst:g} "
                    "messages (--send-burst) allows at once: split it into smaller batches",
                ),
                context,
            )
        await self._throttle(sender, count, context)
        envelopes = []
        for index, item in enumerate(request.requests):
            try:
                envelopes.append(self.validator.envelope(item))
            except (InvalidSend, LimitExceeded) as exc:
                await self._invalid(exc, context, f"requests[{index}]: ")
        claimed = await self._claim_keys(sender, list(zip(request.requests, envelopes, strict=True)), context)
        responses = []
        for index, item in enumerate(claimed):
            responses.append(
                await self._publish(sender, item, context, accepted=index, unpublished=claimed[index + 1 :])
            )
        return push_pb2.SendBatchResponse(responses=responses)

    async def GetStatus(
        self, request: push_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetStatusResponse:
        sender = await self.api_keys.require(context)
        if not request.message_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "message_id is required")
        try:
            check_id("message_id", request.message_id)
        except LimitExceeded as exc:
            await self._invalid(exc, context)
        # Another sender's message reads exactly like an unknown one: ids are not secrets,
        # but what happened to a message is its sender's business.
        status = await self.receipts.status(request.message_id, sender)
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
            check_id("user_id", request.user_id)
        except LimitExceeded as exc:
            await self._invalid(exc, context)
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

    @staticmethod
    async def _invalid(exc: Exception, context: grpc.aio.ServicerContext, where: str = "") -> None:
        if isinstance(exc, LimitExceeded):
            exc.count()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}{exc}")

    async def _throttle(self, sender: str, count: int, context: grpc.aio.ServicerContext) -> None:
        wait_ms = self.rate.take(sender, count)
        if wait_ms is None:
            return
        LIMITS_HIT.labels("send_rate").inc()
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"sender is over its rate limit of {self.rate.rate:g} messages/s (burst {self.rate.burst:g}); "
            f"retry after {wait_ms} ms",
            trailing_metadata=((RETRY_AFTER_KEY, str(wait_ms)),),
        )

    async def _accept(
        self,
        sender: str,
        request: push_pb2.SendRequest,
        envelope: delivery_pb2.Envelope,
        context: grpc.aio.ServicerContext,
    ) -> push_pb2.SendResponse:
        """Claim the idempotency key (if any), publish, and answer; never report an unqueued message."""
        claimed = await self._claim_keys(sender, [(request, envelope)], context)
        return await self._publish(sender, claimed[0], context)

    async def _claim_keys(
        self,
        sender: str,
        items: list[tuple[push_pb2.SendRequest, delivery_pb2.Envelope]],
        context: grpc.aio.ServicerContext,
    ) -> list[Prepared]:
        """Claim every item's idempotency key before anything is published, so that a reused key
        in a batch fails the whole call."""
        out: list[Prepared] = []
        for request, envelope in items:
            key = request.idempotency_key
            if not key:
                out.append(Prepared(key, None, envelope))
                continue
            claim = Claim(envelope.message.message_id, request_fingerprint(request))
            try:
                holder = await self.idempotency.claim(sender, key, claim, self.config.idempotency_window_seconds)
            except IdempotencyUnavailable as exc:
                await self._release(sender, out)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"idempotency store unavailable: {exc}")
            if holder is None:
                out.append(Prepared(key, claim, envelope))
            elif holder.fingerprint == claim.fingerprint:
                log.info(kv("send.duplicate", sender=sender, idempotency_key=clip(key), message=holder.message_id))
                out.append(Prepared(key, None, push_pb2.SendResponse(message_id=holder.message_id, duplicate=True)))
            else:
                await self._release(sender, out)
                LIMITS_HIT.labels("idempotency_key_reused").inc()
                log.info(kv("send.key_reused", sender=sender, idempotency_key=clip(key), message=holder.message_id))
                where = f"requests[{len(out)}]: " if len(items) > 1 else ""
                await context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{where}idempotency_key {clip(key)!r} was already used for a different request (its target, "
                    "payload or options differ) within the idempotency window; a retry must repeat the request "
                    "exactly, and a new message needs a new key",
                )
        return out

    async def _release(self, sender: str, claimed: list[Prepared]) -> None:
        for key, claim, _ in claimed:
            if claim is not None:
                try:
                    await self.idempotency.release(sender, key, claim)
                except IdempotencyUnavailable as exc:  # the key then stays claimed until its window ends
                    log.warning(kv("send.release_failed", sender=sender, idempotency_key=clip(key), error=str(exc)))

    async def _publish(
        self,
        sender: str,
        item: Prepared,
        context: grpc.aio.ServicerContext,
        accepted: int = 0,
        unpublished: list[Prepared] | None = None,
    ) -> push_pb2.SendResponse:
        envelope = item.outcome
        if isinstance(envelope, push_pb2.SendResponse):
            return envelope  # a duplicate: nothing to publish
        message = envelope.message
        lane = lane_of(message.priority)
        try:
            await self.producer.publish(lane, envelope)
        except QueueUnavailable as exc:
            await self._release(sender, [item, *(unpublished or [])])
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
                    sender_id=sender,
                    **{target: getattr(envelope, target)},
                )
            ]
        )
        if log.isEnabledFor(logging.DEBUG):  # the hot path: skip formatting when not logged
            log.debug(kv("send.accepted", message=message.message_id, lane=lane, **{target: getattr(envelope, target)}))
        return push_pb2.SendResponse(message_id=message.message_id)
