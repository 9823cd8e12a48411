"""PushServicer: validates sends, stamps ids, and publishes to the lane for their priority.

A Send answers once the message is in its lane (fire-and-forget); it never reports a message
as accepted that the lane did not take. Every call is made as a sender (the API key's
identity): idempotency keys, message status and rate limits are per sender.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import NamedTuple

import grpc
from google.protobuf.message import DecodeError
from pushplat_client.v1 import message_pb2, push_pb2, push_pb2_grpc

from pushplat.api.ratelimit import SenderRateLimiter
from pushplat.api.topics import TopicCallError, TopicCalls, check_topic_send
from pushplat.auth import ApiKeyChecker
from pushplat.config import Config
from pushplat.idempotency import Claim, IdempotencyStore, IdempotencyUnavailable
from pushplat.inbox import Inbox
from pushplat.limits import (
    MAX_BATCH_REQUESTS,
    MAX_ID_BYTES,
    LimitExceeded,
    check_id,
    check_key,
    check_labels,
)
from pushplat.logs import clip, kv
from pushplat.messages import lane_of, new_message_id, now_ms
from pushplat.metrics import LIMITS_HIT, MESSAGES_IN, SEND_STREAM_WINDOW_FULL, by_priority
from pushplat.queue import LaneProducer
from pushplat.receipts import ReceiptEvent, Receipts, State
from pushplat.registry import Registry, RegistryUnavailable
from pushplat.topics import Subscriptions
from pushplat.topics.memory import MemorySubscriptions
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.api")
_MESSAGES_IN = by_priority(MESSAGES_IN)
RETRY_AFTER_KEY = "retry-after-ms"
# Built once: Priority.values() makes a new list on every call.
_PRIORITIES = frozenset(message_pb2.Priority.values())
_DELIVERY_MODES = frozenset(message_pb2.DeliveryMode.values())
_ACCEPTED = State.DELIVERY_STATE_ACCEPTED
_LIMIT_SEND_RATE = LIMITS_HIT.labels("send_rate")
_LIMIT_KEY_REUSED = LIMITS_HIT.labels("idempotency_key_reused")
# A SendBatch's validation yields to the event loop after this many requests: 500 of them in one
# go would stall every other client meanwhile (see tests/e2e/test_event_loop.py).
BATCH_STEP = 64
# A SendStream request_id refused as too long is still echoed up to this size (so the caller
# can match its answer); beyond it the answer carries an empty id.
ECHO_ID_BYTES = 8 * MAX_ID_BYTES


class InvalidSend(ValueError):
    """A SendRequest that can never succeed; the message says which field is wrong."""


def request_fingerprint(request: push_pb2.SendRequest) -> str:
    """What makes two Sends "the same request" for an idempotency key: every field but the key."""
    body = push_pb2.SendRequest()
    body.CopyFrom(request)
    body.ClearField("idempotency_key")
    body.ClearField("request_id")  # a retry on another SendStream carries another request_id
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()[:32]


class Refusal(NamedTuple):
    """Why one request is not accepted: the status a Send of it alone ends with."""

    code: grpc.StatusCode
    message: str
    retry_after_ms: int = 0


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
            raise InvalidSend("a target is required: set user_id, device_id or topic")
        if target == "topic":
            check_topic_send(request)
        else:
            check_id(target, getattr(request, target))
        size = len(request.payload)
        if size > self.config.max_payload_bytes:
            raise InvalidSend(f"payload is {size} bytes; the limit is {self.config.max_payload_bytes} bytes")
        if not 0 <= request.ttl_seconds <= self.config.max_ttl_seconds:
            limit = self.config.max_ttl_seconds
            raise InvalidSend(f"ttl_seconds must be between 0 and {limit}, got {request.ttl_seconds}")
        if request.priority not in _PRIORITIES:
            raise InvalidSend(f"unknown priority {request.priority}")
        if request.delivery not in _DELIVERY_MODES:
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
            topic=request.topic,
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
        subscriptions: Subscriptions | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.config = config
        self.topics = TopicCalls(config, producer, inbox, subscriptions or MemorySubscriptions())
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
        [prepared] = await self._claim(sender, [(request, envelope)])
        if isinstance(prepared, Refusal):
            await self._refuse(prepared, context)
        [result] = await self._publish(sender, [prepared])
        if isinstance(result, Refusal):
            await self._refuse(result, context)
        return result

    async def SendBatch(
        self, request: push_pb2.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SendBatchResponse:
        """All or nothing up to the lanes: every request is validated and every key claimed (in
        one round trip) before anything is published; then one publish per lane."""
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
        items = []
        for index, item in enumerate(request.requests):
            try:
                items.append((item, self.validator.envelope(item)))
            except (InvalidSend, LimitExceeded) as exc:
                await self._invalid(exc, context, f"requests[{index}]: ")
            if index % BATCH_STEP == BATCH_STEP - 1:
                await asyncio.sleep(0)
        prepared = await self._claim(sender, items)
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, Refusal):
                await self._release(sender, [p for p in prepared if isinstance(p, Prepared)])
                where = f"requests[{index}]: " if count > 1 and outcome.code == grpc.StatusCode.ALREADY_EXISTS else ""
                await self._refuse(outcome, context, where)
        results = await self._publish(sender, prepared)  # type: ignore[arg-type]
        failed = [r for r in results if isinstance(r, Refusal)]
        if failed:
            accepted = count - len(failed)
            done = (
                f"; {accepted} of the batch's {count} messages were accepted (repeat the batch with "
                "idempotency keys to send the rest exactly once)"
                if accepted
                else ""
            )
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{failed[0].message}{done}")
        return push_pb2.SendBatchResponse(responses=results)  # type: ignore[arg-type]

    async def SendStream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[push_pb2.SendResponse]:
        """Each request is its own Send, answered with its request_id; a refused one gets an
        error response and the stream carries on. Requests that arrive while a batch is being
        handled form the next batch (one claim round trip, one publish per lane). At most
        --send-stream-window requests (and --send-stream-window-bytes) wait for their answers:
        beyond that the server stops reading, and HTTP/2 flow control holds the sender back."""
        sender = await self.api_keys.require(context)
        # Headers now: clients wait for them (or for a refusal) before their first request.
        await context.send_initial_metadata(())
        window = _Window(self.config.send_stream_window, self.config.send_stream_window_bytes)
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue()  # bounded by the window

        async def read() -> None:
            try:
                async for raw in requests:
                    await window.take(len(raw))
                    inbox.put_nowait(raw)
            finally:
                inbox.put_nowait(None)

        reader = asyncio.create_task(read(), name="send-stream-reader")
        try:
            ended = False
            while not ended:
                first = await inbox.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH_REQUESTS and not inbox.empty():
                    item = inbox.get_nowait()
                    if item is None:
                        ended = True
                        break
                    batch.append(item)
                for response in await self._stream_batch(sender, batch):
                    yield response
                window.give(len(batch), sum(map(len, batch)))
            await reader  # re-raises what ended the request stream, if anything did
        finally:
            reader.cancel()

    async def _stream_batch(self, sender: str, raws: list[bytes]) -> list[push_pb2.SendResponse]:
        responses: list[push_pb2.SendResponse | None] = [None] * len(raws)
        valid: list[tuple[int, push_pb2.SendRequest, delivery_pb2.Envelope]] = []
        for index, raw in enumerate(raws):
            if index and index % BATCH_STEP == 0:
                await asyncio.sleep(0)  # as SendBatch does: a full window never holds the loop
            try:
                request = push_pb2.SendRequest.FromString(raw)
            except DecodeError:
                responses[index] = _error_response(
                    "", Refusal(grpc.StatusCode.INVALID_ARGUMENT, "malformed SendRequest: not a valid protobuf")
                )
                continue
            request_id = request.request_id
            try:
                check_id("request_id", request_id)
            except LimitExceeded as exc:
                exc.count()
                # Echo a bad id back so the caller can match it, but never a hostile one whole.
                echoed = request_id if len(request_id.encode("utf-8", "surrogatepass")) <= ECHO_ID_BYTES else ""
                responses[index] = _error_response(
                    echoed,
                    Refusal(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"{exc} (request_id is required on SendStream, of your choosing, echoed in the response)",
                    ),
                )
                continue
            wait_ms = self.rate.take(sender, 1)
            if wait_ms is not None:
                _LIMIT_SEND_RATE.inc()
                responses[index] = _error_response(request_id, self._rate_refusal(wait_ms))
                continue
            try:
                valid.append((index, request, self.validator.envelope(request)))
            except (InvalidSend, LimitExceeded) as exc:
                if isinstance(exc, LimitExceeded):
                    exc.count()
                responses[index] = _error_response(request_id, Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(exc)))
        if valid:
            prepared = await self._claim(sender, [(request, envelope) for _, request, envelope in valid])
            publish: list[tuple[int, Prepared]] = []
            for (index, request, _), outcome in zip(valid, prepared, strict=True):
                if isinstance(outcome, Refusal):
                    responses[index] = _error_response(request.request_id, outcome)
                else:
                    publish.append((index, outcome))
            results = await self._publish(sender, [outcome for _, outcome in publish])
            ids = {index: request.request_id for index, request, _ in valid}
            for (index, _), result in zip(publish, results, strict=True):
                if isinstance(result, Refusal):
                    responses[index] = _error_response(ids[index], result)
                else:
                    result.request_id = ids[index]
                    responses[index] = result
        return responses  # type: ignore[return-value]

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

    async def Subscribe(
        self, request: push_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SubscribeResponse:
        return await self._change_topics(request, context, subscribe=True)

    async def Unsubscribe(
        self, request: push_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SubscribeResponse:
        return await self._change_topics(request, context, subscribe=False)

    async def GetSubscriptions(
        self, request: push_pb2.GetSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetSubscriptionsResponse:
        await self.api_keys.require(context)
        try:
            return await self.topics.get(request)
        except LimitExceeded as exc:
            await self._invalid(exc, context)
        except TopicCallError as exc:
            await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable")

    async def _change_topics(
        self, request: push_pb2.SubscribeRequest, context: grpc.aio.ServicerContext, subscribe: bool
    ) -> push_pb2.SubscribeResponse:
        sender = await self.api_keys.require(context)
        # Checked before the rate limit is charged: a request that can never succeed says why
        # (INVALID_ARGUMENT), not "retry after", and spends none of the sender's tokens.
        try:
            topics = self.topics.validate(request)
        except LimitExceeded as exc:
            await self._invalid(exc, context)
        # One change per named device or user counts against the sender's send rate.
        count = len(request.device_ids) + len(request.user_ids)
        if not self.rate.fits(count):
            await self._invalid(
                LimitExceeded(
                    "send_rate",
                    f"the request names {count} devices and users, more than this sender's burst of "
                    f"{self.rate.burst:g} (--send-burst) allows at once: split it into smaller requests",
                ),
                context,
            )
        await self._throttle(sender, count, context)
        try:
            return await self.topics.change(request, subscribe, topics)
        except LimitExceeded as exc:
            await self._invalid(exc, context)
        except TopicCallError as exc:
            await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable")

    @staticmethod
    async def _invalid(exc: Exception, context: grpc.aio.ServicerContext, where: str = "") -> None:
        if isinstance(exc, LimitExceeded):
            exc.count()
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}{exc}")

    @staticmethod
    async def _refuse(refusal: Refusal, context: grpc.aio.ServicerContext, where: str = "") -> None:
        trailers = ((RETRY_AFTER_KEY, str(refusal.retry_after_ms)),) if refusal.retry_after_ms else ()
        await context.abort(refusal.code, f"{where}{refusal.message}", trailing_metadata=trailers)

    def _rate_refusal(self, wait_ms: int) -> Refusal:
        return Refusal(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"sender is over its rate limit of {self.rate.rate:g} messages/s (burst {self.rate.burst:g}); "
            f"retry after {wait_ms} ms",
            wait_ms,
        )

    async def _throttle(self, sender: str, count: int, context: grpc.aio.ServicerContext) -> None:
        wait_ms = self.rate.take(sender, count)
        if wait_ms is None:
            return
        _LIMIT_SEND_RATE.inc()
        await self._refuse(self._rate_refusal(wait_ms), context)

    async def _claim(
        self, sender: str, items: list[tuple[push_pb2.SendRequest, delivery_pb2.Envelope]]
    ) -> list[Prepared | Refusal]:
        """Claim the idempotency keys of the items, all in one store round trip. Per item: the
        envelope to publish (with its claim), a duplicate's earlier response, or a Refusal."""
        out: list[Prepared | Refusal] = [Prepared("", None, envelope) for _, envelope in items]
        keyed = [
            (index, request.idempotency_key, Claim(envelope.message.message_id, request_fingerprint(request)))
            for index, (request, envelope) in enumerate(items)
            if request.idempotency_key
        ]
        if not keyed:
            return out
        window = self.config.idempotency_window_seconds
        try:
            holders = await self.idempotency.claim_many(sender, [(key, claim) for _, key, claim in keyed], window)
        except IdempotencyUnavailable as exc:
            # Some claims may have been taken before the failure: give back any that are ours.
            await self._release(sender, [Prepared(key, claim, items[i][1]) for i, key, claim in keyed])
            refusal = Refusal(grpc.StatusCode.UNAVAILABLE, f"idempotency store unavailable: {exc}")
            for index, _, _ in keyed:
                out[index] = refusal
            return out
        for (index, key, claim), holder in zip(keyed, holders, strict=True):
            if holder is None:
                out[index] = Prepared(key, claim, items[index][1])
            elif holder.fingerprint == claim.fingerprint:
                log.info(kv("send.duplicate", sender=sender, idempotency_key=clip(key), message=holder.message_id))
                out[index] = Prepared(key, None, push_pb2.SendResponse(message_id=holder.message_id, duplicate=True))
            else:
                _LIMIT_KEY_REUSED.inc()
                log.info(kv("send.key_reused", sender=sender, idempotency_key=clip(key), message=holder.message_id))
                out[index] = Refusal(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"idempotency_key {clip(key)!r} was already used for a different request (its target, "
                    "payload or options differ) within the idempotency window; a retry must repeat the request "
                    "exactly, and a new message needs a new key",
                )
        return out

    async def _release(self, sender: str, claimed: list[Prepared]) -> None:
        """Give back the keys of messages that were not enqueued, so that a retry is not a duplicate."""
        claims = [(p.key, p.claim) for p in claimed if p.claim is not None]
        if not claims:
            return
        try:
            await self.idempotency.release_many(sender, claims)
        except IdempotencyUnavailable as exc:  # the keys then stay claimed until their window ends
            log.warning(kv("send.release_failed", sender=sender, keys=len(claims), error=str(exc)))

    async def _publish(self, sender: str, prepared: list[Prepared]) -> list[push_pb2.SendResponse | Refusal]:
        """Publish the new messages, once per lane, and answer each item: its response (a
        duplicate's is the earlier one) or, if its lane did not take it, a Refusal."""
        results: list[push_pb2.SendResponse | Refusal] = [None] * len(prepared)  # type: ignore[list-item]
        by_lane: dict[str, list[int]] = {}
        for index, item in enumerate(prepared):
            if isinstance(item.outcome, push_pb2.SendResponse):
                results[index] = item.outcome  # a duplicate: nothing to publish
            else:
                by_lane.setdefault(lane_of(item.outcome.message.priority), []).append(index)
        if not by_lane:
            return results
        lanes = list(by_lane)
        publishes = [self.producer.publish_many(lane, [prepared[i].outcome for i in by_lane[lane]]) for lane in lanes]
        outcomes = [await publishes[0]] if len(publishes) == 1 else await asyncio.gather(*publishes)
        accepted: list[ReceiptEvent] = []
        unqueued: list[Prepared] = []
        at = now_ms()
        for lane, lane_outcomes in zip(lanes, outcomes, strict=True):
            for index, error in zip(by_lane[lane], lane_outcomes, strict=True):
                envelope = prepared[index].outcome
                message = envelope.message
                if error is None:
                    results[index] = push_pb2.SendResponse(message_id=message.message_id)
                    _MESSAGES_IN[message.priority].inc()
                    labels = message.labels
                    accepted.append(
                        ReceiptEvent(
                            message.message_id,
                            _ACCEPTED,
                            envelope.device_id,
                            envelope.user_id,
                            "",
                            dict(labels) if labels else None,
                            "",
                            sender,
                            at,
                            envelope.topic,
                        )
                    )
                else:
                    results[index] = Refusal(
                        grpc.StatusCode.UNAVAILABLE, f"queue unavailable, message not accepted: {error}"
                    )
                    unqueued.append(prepared[index])
        if accepted:
            self.receipts.record(accepted)
        if unqueued:
            log.warning(kv("send.unavailable", messages=len(unqueued), first=unqueued[0].outcome.message.message_id))
            await self._release(sender, unqueued)
        return results


def _error_response(request_id: str, refusal: Refusal) -> push_pb2.SendResponse:
    return push_pb2.SendResponse(
        request_id=request_id,
        error=push_pb2.SendError(
            code=refusal.code.value[0], message=refusal.message, retry_after_ms=refusal.retry_after_ms
        ),
    )


class _Window:
    """A SendStream's requests read but not answered yet, bounded in count and bytes. One
    request is always let in when none is waiting, whatever its size."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._room = asyncio.Event()

    async def take(self, size: int) -> None:
        while self.requests and (self.requests >= self.max_requests or self.bytes + size > self.max_bytes):
            SEND_STREAM_WINDOW_FULL.inc()
            self._room.clear()
            await self._room.wait()
        self.requests += 1
        self.bytes += size

    def give(self, requests: int, size: int) -> None:
        self.requests -= requests
        self.bytes -= size
        self._room.set()
