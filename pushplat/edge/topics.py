"""EdgeTopics: the edge's local topic index and everything topical on a device stream.

The index maps topic -> this edge's sessions subscribed to it, so a topic message that reaches
the edge (once, from each router batch) is fanned out here, through each session's own queue
(priorities, TTL checks and queue limits as for any message). The router never enumerates
subscribers: a broadcast costs it one delivery per live edge.

Where the index comes from:
- restore: when a session opens (after it registered), its device's subscriptions are read from
  the store. A change the router routes to this session meanwhile is held and applied after the
  snapshot, unless the snapshot already has it (every change carries the device's version).
- the device's own Subscribe/Unsubscribe frames: the edge writes the store, then applies the
  store's answer (a snapshot with its version) and answers the device.
- the backend's Push.Subscribe/Unsubscribe: the api writes the store, then publishes one control
  record per device in the high lane; the router routes it to the device's edge like a message
  (deliver() below). Data keeps flowing one way (api -> lane -> router -> edge), and the change
  reaches the session in order with the device's other deliveries, with no store read per change.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import grpc
from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.config import Config
from pushplat.edge.session import Session, framed_size
from pushplat.limits import MAX_ID_BYTES
from pushplat.logs import LogLimiter, clip, kv
from pushplat.metrics import (
    EDGE_TOPIC_SUBSCRIPTIONS,
    EDGE_TOPICS,
    LIMITS_HIT,
    TOPIC_FANOUT,
    TOPIC_RESTORES,
    TOPIC_SUBSCRIBERS,
)
from pushplat.receipts import ReceiptEvent, State, receipt
from pushplat.receipts.base import FANOUT
from pushplat.token_bucket import TokenBucket
from pushplat.topics import Change, Subscriptions
from pushplat.topics.names import MAX_TOPIC_BYTES, MAX_TOPICS_PER_REQUEST, topic_error
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.edge")
Outcome = delivery_pb2.DeliverResponse.Outcome
QUEUED, NO_SESSION = Outcome.QUEUED, Outcome.NO_SESSION
DELIVERED, DROPPED = State.DELIVERY_STATE_DELIVERED_TO_EDGE, State.DELIVERY_STATE_DROPPED
ACKED = State.DELIVERY_STATE_ACKED
# How long acks of topic messages are counted before their receipt is recorded.
ACK_FLUSH_SECONDS = 0.1
# Changes held for a session while its snapshot is read; past it the snapshot is read again.
MAX_HELD_CHANGES = 256
# Restores retried (with backoff) while the store is down, per session.
RESTORE_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
# Per-topic metric decisions remembered (the allow list's patterns are matched once per name).
METRIC_DECISIONS_MAX = 10_000
INVALID, EXHAUSTED, UNAVAILABLE = (
    grpc.StatusCode.INVALID_ARGUMENT.value[0],
    grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
    grpc.StatusCode.UNAVAILABLE.value[0],
)

# Queue on a session: the message, its wire_size and its encoding; returns an Outcome.
Push = Callable[[Session, message_pb2.Message, int, bytes], int]
Record = Callable[[list[ReceiptEvent]], None]
# Topic message ids remembered for their acks.
RECENT_MESSAGES = 10_000
_REASONS = {Outcome.QUEUE_FULL: "queue_full", Outcome.NO_SESSION: "no_session", Outcome.EXPIRED: "expired"}


class _State:
    """One session's topics on this edge."""

    __slots__ = ("changes", "held", "restoring", "stale", "topics", "version")

    def __init__(self) -> None:
        self.topics: set[str] = set()
        self.version = 0
        self.restoring = True
        self.held: list[delivery_pb2.TopicChange] = []
        self.stale = False  # more changes arrived during the restore than it could hold
        # Subscribe/Unsubscribe frames that change something; made on the first (most devices never do).
        self.changes: TokenBucket | None = None


class EdgeTopics:
    def __init__(
        self,
        config: Config,
        store: Subscriptions,
        hub_get: Callable[[str], Session | None],
        record: Record | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.hub_get = hub_get
        self.record = record
        # Topic messages fanned out here lately (message id -> topic), so that an ack of one
        # counts in the message's aggregate status. Bounded; the oldest go first.
        self.recent: OrderedDict[str, str] = OrderedDict()
        # Acks of those, counted per message until the next flush: message id -> [topic, acks, labels].
        self._acks: dict[str, list] = {}
        self._ack_flusher: asyncio.TimerHandle | None = None
        self.index: dict[str, dict[Session, None]] = {}
        self.states: dict[Session, _State] = {}
        self.subscriptions = 0
        self.rate = config.topic_changes_per_second
        self.burst = max(1.0, 2 * self.rate)
        self._metric_patterns = list(config.metric_topics)
        self._metric_decisions: dict[str, bool] = {}
        self._log = LogLimiter(interval_seconds=1.0)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- session lifecycle --------------------------------------------------------------------

    async def restore(self, session: Session) -> None:
        """Load the device's subscriptions into the index (after the session registered, so a
        change the router could not route to it is already in the store). Never raises: a store
        that is down is retried in the background while the session lives."""
        self.states[session] = _State()
        if not await self._restore_once(session, first=True):
            task = asyncio.create_task(self._retry_restore(session), name=f"topics-restore-{session.session_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def forget(self, session: Session) -> None:
        state = self.states.pop(session, None)
        if state is not None:
            self._set_topics(session, state, set())

    async def close(self) -> None:
        if self._ack_flusher is not None:
            self._ack_flusher.cancel()
        self.flush_acks()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _restore_once(self, session: Session, first: bool = False) -> bool:
        try:
            snapshot = await self.store.get(session.device_id, touch_ttl_seconds=self.config.device_memory_seconds)
        except Exception as exc:
            TOPIC_RESTORES.labels("failed").inc()
            if first:
                log.warning(kv("topics.restore_failed", device=session.device_id, error=repr(exc)))
            return False
        state = self.states.get(session)
        if state is None:  # closed meanwhile
            return True
        if state.stale:
            state.stale, state.held = False, []
            return await self._restore_once(session)
        if snapshot.version > state.version:
            self._set_topics(session, state, set(snapshot.topics))
            state.version = snapshot.version
        held, state.held, state.restoring = state.held, [], False
        for change in held:
            self._apply(session, state, change)
        TOPIC_RESTORES.labels("ok").inc()
        return True

    async def _retry_restore(self, session: Session) -> None:
        for delay in (*RESTORE_RETRY_SECONDS, *([RESTORE_RETRY_SECONDS[-1]] * 1000)):
            await asyncio.sleep(delay)
            if session not in self.states or session.closed:
                return
            if await self._restore_once(session):
                log.info(kv("topics.restored_late", device=session.device_id, session=session.session_id))
                return

    # -- the router's deliveries ---------------------------------------------------------------

    def change(self, device_id: str, change: delivery_pb2.TopicChange) -> int:
        """A control record: the device's subscriptions changed in the store."""
        session = self.hub_get(device_id)
        state = self.states.get(session) if session is not None else None
        if session is None or state is None or session.closed:
            return NO_SESSION
        if state.restoring:
            if len(state.held) < MAX_HELD_CHANGES:
                state.held.append(change)
            else:
                state.stale = True
        else:
            self._apply(session, state, change)
        return QUEUED

    def fanout(self, topic: str, message: message_pb2.Message, push: Push) -> dict[int, int]:
        """Queue message on every session here subscribed to topic; how many got each outcome."""
        outcomes: dict[int, int] = {}
        sessions = self.index.get(topic)
        if sessions:
            # Encoded once per fan-out, not once per subscriber (edge/frames.py).
            encoded = message.SerializeToString()
            size = framed_size(len(encoded))
            for session in list(sessions):
                outcome = push(session, message, size, encoded)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            for outcome, count in outcomes.items():
                TOPIC_FANOUT.labels(Outcome.Name(outcome).lower()).inc(count)
            self.recent[message.message_id] = topic
            while len(self.recent) > RECENT_MESSAGES:
                self.recent.popitem(last=False)
        self._report(topic, message, outcomes)
        return outcomes

    def _report(self, topic: str, message: message_pb2.Message, outcomes: dict[int, int]) -> None:
        """The fan-out's aggregate receipts: devices written here, and dropped by reason."""
        if self.record is None:
            return
        mid, edge = message.message_id, self.config.edge_id
        events = [
            receipt(
                mid,
                DELIVERED,
                edge_id=edge,
                topic=topic,
                count=outcomes.get(QUEUED, 0),
                detail=FANOUT,
                labels=message.labels,
            )
        ]
        for outcome, count in outcomes.items():
            if outcome != QUEUED:
                reason = _REASONS.get(outcome, Outcome.Name(outcome).lower())
                events.append(receipt(mid, DROPPED, edge_id=edge, topic=topic, count=count, detail=reason))
        self.record(events)  # buffered: flushed off the hot path

    def count_acks(self, acked: list[tuple[Session, str, object]]) -> list[tuple[Session, str, object]]:
        """Take the acks (session, message id, labels) of topic messages fanned out here: they are
        counted, and recorded as one receipt per message every ACK_FLUSH_SECONDS (thousands of
        devices ack one broadcast). Return the others, which get a receipt each."""
        recent = self.recent
        if not recent or self.record is None:
            return acked
        rest = []
        for entry in acked:
            mid = entry[1]
            topic = recent.get(mid)
            if topic is None:
                rest.append(entry)
                continue
            counted = self._acks.get(mid)
            if counted is None:
                self._acks[mid] = [topic, 1, entry[2]]
            else:
                counted[1] += 1
        if self._acks and self._ack_flusher is None:
            self._ack_flusher = asyncio.get_running_loop().call_later(ACK_FLUSH_SECONDS, self.flush_acks)
        return rest

    def flush_acks(self) -> None:
        self._ack_flusher = None
        acks, self._acks = self._acks, {}
        if acks and self.record is not None:
            edge = self.config.edge_id
            self.record(
                [
                    receipt(mid, ACKED, edge_id=edge, topic=topic, count=count, labels=labels)
                    for mid, (topic, count, labels) in acks.items()
                ]
            )

    # -- the device's own frames ---------------------------------------------------------------

    def frame_error(self, topics: Sequence[str], request_id: str) -> str:
        """A protocol error in a Subscribe/Unsubscribe frame (the stream ends), or ""."""
        if len(topics) > MAX_TOPICS_PER_REQUEST:
            LIMITS_HIT.labels("topics_per_request").inc()
            return (
                f"a Subscribe/Unsubscribe frame carries {len(topics)} topics; the limit is "
                f"{MAX_TOPICS_PER_REQUEST} per frame (send several frames)"
            )
        if len(request_id) > MAX_ID_BYTES // 4 and len(request_id.encode()) > MAX_ID_BYTES:
            LIMITS_HIT.labels("id").inc()
            return f"request_id is {len(request_id.encode())} bytes; the limit is {MAX_ID_BYTES} bytes"
        return ""

    async def on_frame(self, session: Session, subscribe: bool, topics: Sequence[str], request_id: str) -> None:
        """Apply a device's Subscribe/Unsubscribe and queue its SubscriptionResult. Each topic is
        applied or refused on its own (bad name, device full, store down, over the rate)."""
        result = edge_pb2.SubscriptionResult(request_id=request_id)
        state = self.states.get(session)
        wanted: list[str] = []
        for topic in dict.fromkeys(topics):
            error = topic_error(topic)
            if error is None:
                wanted.append(topic)
            else:
                LIMITS_HIT.labels("topic_name").inc()
                # Echoed as sent, so the client can match it; only a name over the limit is cut.
                echo = topic if len(topic) <= MAX_TOPIC_BYTES else clip(topic)
                result.refused.add(topic=echo, code=INVALID, message=error)
        if wanted and not self._take_token(state):
            LIMITS_HIT.labels("topic_changes").inc()
            self._log_refusal("topics.rate_limited", session)
            message = (
                f"this device changes its subscriptions more than {self.rate:g} times a second "
                "(--topic-changes-per-second); retry later"
            )
            for topic in wanted:
                result.refused.add(topic=topic, code=EXHAUSTED, message=message)
            wanted = []
        if wanted:
            change = Change(session.device_id, wanted, ()) if subscribe else Change(session.device_id, (), wanted)
            try:
                changed = await self.store.change(
                    change, self.config.max_topics_per_device, self.config.device_memory_seconds, snapshot=True
                )
            except Exception as exc:  # SubscriptionsUnavailable, or anything a broken store raises
                self._log_refusal("topics.store_failed", session, error=repr(exc))
                for topic in wanted:
                    result.refused.add(topic=topic, code=UNAVAILABLE, message="the subscription store is unavailable")
            else:
                result.applied.extend(changed.subscribed if subscribe else changed.unsubscribed)
                full_message = (
                    f"the device holds {changed.count} topics, the limit (--max-topics-per-device is "
                    f"{self.config.max_topics_per_device}); unsubscribe from some first"
                )
                if changed.full:
                    LIMITS_HIT.labels("topics_per_device").inc(len(changed.full))
                for topic in changed.full:
                    result.refused.add(topic=topic, code=EXHAUSTED, message=full_message)
                result.topic_count = changed.count
                state = self.states.get(session)
                if state is not None and changed.topics is not None and changed.version > state.version:
                    self._set_topics(session, state, set(changed.topics))
                    state.version = changed.version
        if state is not None and not result.topic_count:
            result.topic_count = len(state.topics)
        session.outbound.control(edge_pb2.ServerFrame(subscription=result))

    # -- introspection ---------------------------------------------------------------------------

    def topics_of(self, session: Session) -> set[str]:
        state = self.states.get(session)
        return set(state.topics) if state is not None else set()

    # -- internals ---------------------------------------------------------------------------------

    def _apply(self, session: Session, state: _State, change: delivery_pb2.TopicChange) -> None:
        if change.version <= state.version:
            return  # already in the snapshot this session holds
        topics = set(state.topics)
        topics.update(change.subscribed)
        topics.difference_update(change.unsubscribed)
        self._set_topics(session, state, topics)
        state.version = change.version

    def _set_topics(self, session: Session, state: _State, topics: set[str]) -> None:
        for topic in state.topics - topics:
            sessions = self.index.get(topic)
            if sessions is not None:
                sessions.pop(session, None)
                if not sessions:
                    del self.index[topic]
                self._count(topic, sessions)
        for topic in topics - state.topics:
            sessions = self.index.setdefault(topic, {})
            sessions[session] = None
            self._count(topic, sessions)
        self.subscriptions += len(topics) - len(state.topics)
        state.topics = topics
        EDGE_TOPICS.set(len(self.index))
        EDGE_TOPIC_SUBSCRIPTIONS.set(self.subscriptions)

    def _count(self, topic: str, sessions: dict[Session, None]) -> None:
        if self._metric_allowed(topic):
            TOPIC_SUBSCRIBERS.labels(topic).set(len(sessions))

    def _metric_allowed(self, topic: str) -> bool:
        if not self._metric_patterns:
            return False
        allowed = self._metric_decisions.get(topic)
        if allowed is None:
            allowed = any(fnmatch.fnmatchcase(topic, pattern) for pattern in self._metric_patterns)
            if len(self._metric_decisions) >= METRIC_DECISIONS_MAX:
                self._metric_decisions.clear()
            self._metric_decisions[topic] = allowed
        return allowed

    def _take_token(self, state: _State | None) -> bool:
        if state is None or self.rate <= 0:
            return True
        if state.changes is None:
            state.changes = TokenBucket(self.rate, self.burst)
        return state.changes.take()

    def _log_refusal(self, event: str, session: Session, **fields: str) -> None:
        allowed, suppressed = self._log.allow(event)
        if allowed:
            log.info(
                kv(event, device=session.device_id, session=session.session_id, suppressed=suppressed or None, **fields)
            )
