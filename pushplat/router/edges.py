"""EdgeQueues: one delivery queue, one in-flight call and one circuit breaker per edge.

The routing loop only ever appends to these queues, so a slow or dead edge delays its own
devices and nobody else's. Each queue has one task that sends what is queued, highest lane
first, in one Delivery.Deliver call at a time: one call in flight keeps every device's
messages in order (concurrent unary calls may be served in any order), and whatever queues up
while a call is out goes in the next one, so a busy edge gets bigger batches, not more calls.

Bounds: each queue holds at most `edge_queue_messages` deliveries and `edge_queue_bytes`
message bytes; a call carries at most `batch_size` messages and DELIVER_BATCH_BYTES. What does
not fit, and everything offered while the breaker is not closed, is refused at once: an
at-least-once message is already in its device's inbox (the router writes it first) and is
replayed when the device reconnects; an at-most-once one is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from pushplat_client.v1 import message_pb2

from pushplat.edge_link import EdgeLink
from pushplat.logs import LogLimiter, kv
from pushplat.metrics import (
    DELIVER_SECONDS,
    DROPPED,
    EDGE_CIRCUIT_CHANGES,
    EDGE_CIRCUITS,
    EDGE_QUEUE_BYTES,
    EDGE_QUEUE_MESSAGES,
    LIMITS_HIT,
)
from pushplat.receipts import ReceiptEvent, State, receipt
from pushplat.router.breaker import CircuitBreaker, CircuitState
from pushplat.router.commits import CommitTracker, Entry
from pushplat.router.scheduler import LaneScheduler
from pushplat.v1 import delivery_pb2
from pushplat.waits import wait_event

log = logging.getLogger("pushplat.router")

# Message bytes per Deliver call (at least one message): well under the 4 MiB an edge accepts
# per request by default (4 x --max-payload-bytes, at least 4 MiB).
DELIVER_BATCH_BYTES = 1024 * 1024
# A queue that was offered nothing for this long is dropped (an edge that left, or restarted
# under a new id); it is made again on the next delivery.
IDLE_SECONDS = 60.0

# Enum values resolved once: attribute lookups on the protobuf enum wrappers are slow.
Outcome = delivery_pb2.DeliverResponse.Outcome
NO_SESSION = Outcome.NO_SESSION
UNSPECIFIED = Outcome.OUTCOME_UNSPECIFIED
NO_ROUTE = State.DELIVERY_STATE_NO_ROUTE
DELIVERED = State.DELIVERY_STATE_DELIVERED_TO_EDGE
_STATE_OF_OUTCOME = {
    Outcome.QUEUED: (State.DELIVERY_STATE_DELIVERED_TO_EDGE, ""),
    Outcome.NO_SESSION: (NO_ROUTE, "device left the edge"),
    Outcome.QUEUE_FULL: (State.DELIVERY_STATE_DROPPED, "device queue full"),
    Outcome.EXPIRED: (State.DELIVERY_STATE_EXPIRED, "expired at the edge"),
    Outcome.IN_INBOX: (State.DELIVERY_STATE_DELIVERED_TO_EDGE, "in the inbox; the device's session takes it in order"),
    Outcome.TOO_LARGE: (State.DELIVERY_STATE_DROPPED, "larger than the edge's --max-frame-bytes"),
}
_UNKNOWN_OUTCOME = (State.DELIVERY_STATE_DROPPED, "unknown outcome")
UNREACHABLE = "edge unreachable"
UNAVAILABLE = "edge unavailable (circuit open)"
QUEUE_FULL = "edge queue full"

_DROPPED = {
    reason: DROPPED.labels(reason)
    for reason in ("edge_gone", "edge_unreachable", "edge_unavailable", "edge_queue_full")
}
_CIRCUITS = {state: EDGE_CIRCUITS.labels(state.value) for state in CircuitState}
_CIRCUIT_CHANGES = {state: EDGE_CIRCUIT_CHANGES.labels(state.value) for state in CircuitState}
_LIMIT_MESSAGES = LIMITS_HIT.labels("edge_queue_messages")
_LIMIT_BYTES = LIMITS_HIT.labels("edge_queue_bytes")


# The topic_change of every delivery that is not a control record (version 0: no change).
NO_CHANGE = delivery_pb2.TopicChange()


class Delivery:
    """One message for one device session on one edge; it settles one delivery of its entry.
    Has the fields of delivery_pb2.Routed, so the in-process link hands it over as it is. A
    topic message has a topic and no device; a control record has a topic_change (see
    router/topics.py)."""

    __slots__ = ("device_id", "entry", "lane", "message", "session_id", "size", "topic", "topic_change")

    def __init__(
        self,
        lane: str,
        device_id: str,
        session_id: str,
        message: message_pb2.Message,
        entry: Entry,
        topic_change: delivery_pb2.TopicChange = NO_CHANGE,
        topic: str = "",
        size: int | None = None,
    ) -> None:
        self.lane = lane
        self.device_id = device_id
        self.session_id = session_id
        self.message = message
        self.entry = entry
        self.topic = topic
        self.topic_change = topic_change
        # `size`: the message's ByteSize() when the caller already has it (one message, many
        # deliveries: a user's devices, a topic's edges).
        if size is None:
            size = message.ByteSize()
        self.size = size + (topic_change.ByteSize() if topic_change.version else 0)


@dataclass(frozen=True)
class EdgeLimits:
    queue_messages: int = 10_000
    queue_bytes: int = 16 * 1024 * 1024
    batch_size: int = 256
    deliver_timeout: float = 2.0
    breaker_failures: int = 3
    breaker_open_seconds: float = 1.0


Emit = Callable[[list[ReceiptEvent]], Awaitable[None]]


class EdgeQueues:
    """The router's edges: their queues, and how each delivery's outcome is settled."""

    def __init__(self, link: EdgeLink, limits: EdgeLimits, tracker: CommitTracker, emit: Emit) -> None:
        self.link = link
        self.limits = limits
        self.tracker = tracker
        self.emit = emit
        self.queues: dict[str, EdgeQueue] = {}
        self.log_limiter = LogLimiter(interval_seconds=1.0)

    def dispatch(self, per_edge: dict[str, list[Delivery]], addresses: dict[str, str]) -> list[ReceiptEvent]:
        """Queue each edge's deliveries (never waits); settle at once, with their receipts, those
        that cannot go: no address for the edge, its breaker open, or its queue full."""
        events: list[ReceiptEvent] = []
        for edge_id, items in per_edge.items():
            address = addresses.get(edge_id)
            if address is None:
                _DROPPED["edge_gone"].inc(len(items))
                log.info(kv("router.edge_gone", edge=edge_id, messages=len(items)))
                events += self.settle(edge_id, items, None, "")
                continue
            queue = self.queues.get(edge_id)
            if queue is None or queue.task.done():
                queue = self.queues[edge_id] = EdgeQueue(edge_id, self)
            queue.address = address
            refused, why = queue.offer(items)
            if refused:
                reason = "edge_unavailable" if why == UNAVAILABLE else "edge_queue_full"
                _DROPPED[reason].inc(len(refused))
                self._log_refused(edge_id, why, len(refused))
                events += self.settle(edge_id, refused, None, why)
        return events

    def settle(
        self, edge_id: str, items: Sequence[Delivery], outcomes: Sequence[int] | None, detail: str
    ) -> list[ReceiptEvent]:
        """Each item's receipt; each item settles one delivery of its record. No outcomes: the
        items did not reach the edge (detail says why, or the edge is gone)."""
        events = []
        settle = self.tracker.settle
        for i, item in enumerate(items):
            if item.topic_change.version:  # a control record: no receipt
                settle(item.entry)
                continue
            if outcomes is None:
                outcome = NO_SESSION
            else:
                outcome = outcomes[i] if i < len(outcomes) else UNSPECIFIED
            events.append(_outcome_receipt(item, edge_id, outcome, detail))
            settle(item.entry)
        return events

    async def settle_and_emit(
        self, edge_id: str, items: Sequence[Delivery], outcomes: Sequence[int] | None, detail: str
    ) -> None:
        await self.emit(self.settle(edge_id, items, outcomes, detail))

    def retire(self, queue: EdgeQueue) -> None:
        if queue.retired:
            return
        queue.retired = True
        if self.queues.get(queue.edge_id) is queue:
            del self.queues[queue.edge_id]
        _CIRCUITS[queue.breaker.state].dec()

    async def close(self) -> None:
        """Stop every queue. What was still queued or in flight is not settled, so it is not
        committed either: the lane delivers it again (to the next router)."""
        queues = list(self.queues.values())
        for queue in queues:
            queue.task.cancel()
        await asyncio.gather(*(q.task for q in queues), return_exceptions=True)
        for queue in queues:
            queue.drop_pending()
            self.retire(queue)

    def _log_refused(self, edge_id: str, why: str, count: int) -> None:
        # Once a second per edge and reason: a dead edge refuses every message sent its way.
        allowed, suppressed = self.log_limiter.allow(f"{edge_id}|{why}")
        if allowed:
            log.warning(
                kv("router.edge_refused", edge=edge_id, reason=why, messages=count, suppressed=suppressed or None)
            )


class EdgeQueue:
    def __init__(self, edge_id: str, owner: EdgeQueues) -> None:
        self.edge_id = edge_id
        self.owner = owner
        self.address = ""
        self.retired = False
        self.pending: LaneScheduler[Delivery] = LaneScheduler()
        self.bytes = 0
        limits = owner.limits
        self.breaker = CircuitBreaker(limits.breaker_failures, limits.breaker_open_seconds, on_change=self._changed)
        _CIRCUITS[CircuitState.CLOSED].inc()
        self.last_offer = time.monotonic()
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"edge-queue-{edge_id}")

    def offer(self, items: list[Delivery]) -> tuple[list[Delivery], str]:
        """Queue what fits; return the refused items and why."""
        self.last_offer = time.monotonic()
        if not self.breaker.closed:
            return items, UNAVAILABLE
        limits = self.owner.limits
        queued = self.pending.buffered()
        taken = added = 0
        for item in items:
            if queued + taken >= limits.queue_messages:
                _LIMIT_MESSAGES.inc(len(items) - taken)
                break
            # One message always fits in an empty queue, however large.
            if self.bytes + added + item.size > limits.queue_bytes and queued + taken:
                _LIMIT_BYTES.inc(len(items) - taken)
                break
            added += item.size
            taken += 1
        if taken:
            self.pending.add(items if taken == len(items) else items[:taken])
            self.bytes += added
            EDGE_QUEUE_MESSAGES.inc(taken)
            EDGE_QUEUE_BYTES.inc(added)
            self._wake.set()
        return items[taken:], QUEUE_FULL

    def _take(self, count: int = 0, max_bytes: int = DELIVER_BATCH_BYTES) -> list[Delivery]:
        batch = self.pending.take(count or self.owner.limits.batch_size, max_bytes)
        size = sum(item.size for item in batch)
        self.bytes -= size
        EDGE_QUEUE_MESSAGES.dec(len(batch))
        EDGE_QUEUE_BYTES.dec(size)
        return batch

    def drop_pending(self) -> list[Delivery]:
        return self._take(self.pending.buffered(), 0) if self.pending.buffered() else []

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not an edge failure: settle what waits (the next dispatch makes a new queue).
            log.exception(kv("router.edge_queue_crashed", edge=self.edge_id))
            left = self.drop_pending()
            await self.owner.settle_and_emit(self.edge_id, left, None, UNREACHABLE)
            self.owner.retire(self)

    async def _serve(self) -> None:
        owner = self.owner
        while True:
            if not self.breaker.closed:
                if not await self._probe():
                    return
                continue
            if not self.pending.buffered():
                self._wake.clear()
                if not await wait_event(self._wake, IDLE_SECONDS):
                    if not self.pending.buffered():
                        owner.retire(self)
                        return
                continue
            batch = self._take()
            started = time.perf_counter()
            try:
                async with asyncio.timeout(owner.limits.deliver_timeout):
                    outcomes = await owner.link.deliver(self.edge_id, self.address, batch)
            except Exception as exc:
                DELIVER_SECONDS.observe(time.perf_counter() - started)
                _DROPPED["edge_unreachable"].inc(len(batch))
                self._log_failure(exc, len(batch))
                opened = self.breaker.failure()
                await owner.settle_and_emit(self.edge_id, batch, None, UNREACHABLE)
                if opened and self.pending.buffered():
                    left = self.drop_pending()
                    _DROPPED["edge_unavailable"].inc(len(left))
                    await owner.settle_and_emit(self.edge_id, left, None, UNAVAILABLE)
                continue
            DELIVER_SECONDS.observe(time.perf_counter() - started)
            self.breaker.success()
            await owner.settle_and_emit(self.edge_id, batch, outcomes, "")

    async def _probe(self) -> bool:
        """While open: wait for the probe time, then send one empty Deliver (half-open). False
        once nobody has offered this edge anything for IDLE_SECONDS: the queue is retired."""
        await asyncio.sleep(self.breaker.seconds_until_probe())
        if time.monotonic() - self.last_offer > IDLE_SECONDS:
            self.owner.retire(self)
            return False
        self.breaker.half_open()
        try:
            async with asyncio.timeout(self.owner.limits.deliver_timeout):
                await self.owner.link.deliver(self.edge_id, self.address, [])
        except Exception as exc:
            self.breaker.failure()
            log.info(kv("router.edge_probe_failed", edge=self.edge_id, address=self.address, error=_describe(exc)))
            return True
        self.breaker.success()
        return True

    def _changed(self, old: CircuitState, new: CircuitState) -> None:
        _CIRCUITS[old].dec()
        _CIRCUITS[new].inc()
        _CIRCUIT_CHANGES[new].inc()
        fields = {"edge": self.edge_id, "address": self.address, "state": new.value, "was": old.value}
        if new is CircuitState.OPEN:
            log.warning(
                kv(
                    "router.edge_circuit",
                    **fields,
                    failures=self.breaker.failures,
                    probe_in_s=round(self.breaker.open_seconds, 3),
                    detail="deliveries to this edge are refused until a probe succeeds",
                )
            )
        else:
            log.info(kv("router.edge_circuit", **fields))

    def _log_failure(self, exc: BaseException, count: int) -> None:
        allowed, suppressed = self.owner.log_limiter.allow(f"{self.edge_id}|failed")
        if not allowed:
            return
        rpc = isinstance(exc, grpc.aio.AioRpcError)
        # The edge died or hung (or refused our internal credentials): its sessions' registry
        # entries expire; at-least-once messages wait in the inbox for the reconnect.
        log.warning(
            kv(
                "router.deliver_failed",
                edge=self.edge_id,
                address=self.address,
                messages=count,
                code=exc.code().name if rpc else None,
                error=exc.details() if rpc else _describe(exc),
                suppressed=suppressed or None,
            )
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "deadline exceeded"
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


# A topic message's per-edge receipt names why the edge was not reached (counted per edge).
_TOPIC_REASONS = {UNREACHABLE: "edge_unreachable", UNAVAILABLE: "edge_unavailable", QUEUE_FULL: "edge_queue_full"}


def _outcome_receipt(item: Delivery, edge_id: str, outcome: int, detail: str = "") -> ReceiptEvent:
    state, default_detail = _STATE_OF_OUTCOME.get(outcome, _UNKNOWN_OUTCOME)
    message = item.message
    if item.topic:
        # Counts only (see receipts.merge_topic): no device, and no labels (the edge's fan-out
        # receipt counts them, once per device written).
        reason = "" if state == DELIVERED else _TOPIC_REASONS.get(detail, "edge_" + Outcome.Name(outcome).lower())
        return receipt(message.message_id, state, edge_id=edge_id, detail=reason, topic=item.topic)
    if state == NO_ROUTE and message.requires_ack:
        detail = (detail or default_detail) + "; kept in inbox"
    return receipt(
        message.message_id,
        state,
        device_id=item.device_id,
        edge_id=edge_id,
        labels=message.labels,
        detail=detail or default_detail,
    )
