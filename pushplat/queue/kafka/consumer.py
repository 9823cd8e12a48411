"""KafkaLaneConsumer: one member of the routers' consumer group, on one dedicated thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from contextlib import suppress
from typing import Any

import kafka.errors as kafka_errors
from google.protobuf.message import DecodeError
from kafka import KafkaConsumer
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

from pushplat.logs import LogLimiter, kv
from pushplat.messages import LANES
from pushplat.metrics import DROPPED
from pushplat.queue.base import LaneConsumer, QueueUnavailable, Record
from pushplat.queue.kafka.admin import build_closing_on_failure, ensure_topics
from pushplat.queue.kafka.listener import RebalanceListener
from pushplat.queue.kafka.settings import KafkaSettings, describe
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.queue.kafka")
# A member that does not poll cannot rejoin, and a rebalance waits for every member: a router
# that fetches nothing for a while (at its in-flight cap) still polls this often.
KEEP_ALIVE_SECONDS = 1.0
# Poll length while rejoining (see _finish_rebalance): long, so the answer lands inside a poll.
REJOIN_POLL_SECONDS = 0.5


class KafkaLaneConsumer(LaneConsumer):
    """One member of the routers' consumer group, subscribed to all three lane topics.

    Lane selection uses pause/resume on one consumer rather than one consumer per lane:

    - one poll can wait on several lanes at once and return as soon as any has data; with a
      consumer per lane, a fetch of "high or low" would need two polls racing on two threads;
    - one group member per router, not three: one heartbeat, one rebalance, and the range
      assignor still gives every router a share of every lane's partitions;
    - a lane that is not being fetched keeps its group membership alive anyway, because
      the one consumer is polled whenever any lane is hungry.

    A paused partition keeps its position and kafka-python parks what it already fetched,
    so resuming costs nothing. A partition assigned in the middle of a poll (a rebalance)
    is not paused yet; its records are not returned but rewound with seek() (see _poll).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.partition_counts: dict[str, int] = {}
        self._consumer: KafkaConsumer | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        # All calls on the KafkaConsumer run on this thread: it is not thread-safe.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        # Bookkeeping shared with the rebalance listener (kafka-python's IO thread).
        self._lock = threading.Lock()
        # Highest offset committed per partition while we own it: commits never go backwards.
        self._committed: dict[TopicPartition, int] = {}
        # Offsets whose commit failed for a transient reason; retried with the next commit.
        self._pending: dict[TopicPartition, int] = {}
        # When the consumer thread last started or finished a poll (time.monotonic()).
        self._polled_at = 0.0
        self._keep_alive_log = LogLimiter(interval_seconds=10.0)

    @classmethod
    def from_config(cls, config: Any) -> KafkaLaneConsumer:
        return cls(KafkaSettings.from_config(config))

    async def start(self) -> None:
        if self._consumer is not None:
            return
        if self._closed:
            raise QueueUnavailable("the Kafka consumer is closed")
        async with self._start_lock:
            if self._consumer is not None:
                return
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            try:
                self.partition_counts = await loop.run_in_executor(self._executor, ensure_topics, self.settings)
                self._consumer = await loop.run_in_executor(self._executor, self._open)
                joined = await loop.run_in_executor(self._executor, self._join)
            except BaseException as exc:
                # Leave nothing half-open: a later start() begins again from scratch.
                if self._consumer is not None:
                    await loop.run_in_executor(self._executor, self._close_sync)
                if isinstance(exc, QueueUnavailable) or not isinstance(exc, Exception):
                    raise
                raise self.settings.unreachable(exc) from exc
            log.info(
                kv(
                    "kafka.consumer_started",
                    brokers=self.settings.where,
                    group=self.settings.group_id,
                    prefix=self.settings.topic_prefix,
                    joined=joined,
                    took_ms=int((time.monotonic() - started) * 1000),
                )
            )

    def _open(self) -> KafkaConsumer:
        settings = self.settings
        consumer: KafkaConsumer = build_closing_on_failure(
            lambda factory: KafkaConsumer(
                bootstrap_servers=settings.brokers,
                client_id=f"{settings.client_id}-router",
                group_id=settings.group_id,
                # Commit only what the router has routed (at-least-once).
                enable_auto_commit=False,
                # A new group starts at the beginning: messages published before the first
                # router came up must still be delivered.
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
                bootstrap_timeout_ms=settings.connect_timeout_ms,
                # A crashed router's partitions move within this; a closed one leaves at once.
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                max_poll_interval_ms=settings.rebalance_timeout_ms,
                request_timeout_ms=max(settings.connect_timeout_ms, 5000),
                reconnect_backoff_max_ms=2000,
                kafka_client=factory,
            ),
            KafkaConsumer.DEFAULT_CONFIG["kafka_client"],
        )
        try:
            consumer.subscribe(topics=list(settings.topics.values()), listener=RebalanceListener(self))
        except BaseException:
            consumer.close(autocommit=False, timeout_ms=0)
            raise
        return consumer

    def _join(self) -> bool:
        """Join the group now rather than on the first fetch; on the consumer thread.

        Bounded by the session timeout: a member that died without leaving holds the
        rebalance up until then. Not joining in time is not fatal, fetch() keeps trying.
        """
        consumer = self._require()
        deadline = time.monotonic() + max(self.settings.connect_timeout, self.settings.session_timeout_ms / 1000)
        while time.monotonic() < deadline:
            # Nothing is wanted: whatever a poll returns is rewound, so start() consumes nothing.
            self._poll(consumer, frozenset(), 1, 0.1)
            if consumer.group_metadata().state == MemberState.STABLE:
                return True
        log.warning(kv("kafka.join_slow", group=self.settings.group_id, detail="still joining; fetch will finish it"))
        return False

    def _require(self) -> KafkaConsumer:
        consumer = self._consumer
        if consumer is None:
            raise QueueUnavailable(
                "the Kafka consumer is closed" if self._closed else "the Kafka consumer is not started"
            )
        return consumer

    async def fetch(self, lanes: Collection[str], max_records: int, timeout: float) -> list[Record]:
        wanted = frozenset(lane for lane in lanes if lane in self.settings.topics)
        if not wanted or max_records <= 0:
            # Nothing to wait on; still honour the timeout so a caller's loop does not spin.
            await asyncio.sleep(max(timeout, 0.0))
            return []
        self._require()
        job = self._executor.submit(self._fetch_sync, wanted, max_records, max(timeout, 0.0))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # The poll may already have advanced positions past records nobody will see;
            # rewind them so they are fetched again. Runs after the poll (one FIFO thread).
            self._executor.submit(self._rewind_unreturned, job)
            raise
        except kafka_errors.KafkaError as exc:
            raise QueueUnavailable(f"cannot fetch from Kafka at {self.settings.where}: {describe(exc)}") from exc

    def _fetch_sync(self, wanted: frozenset[str], max_records: int, timeout: float) -> list[Record]:
        return self._poll(self._require(), wanted, max_records, timeout)

    async def keep_alive(self) -> None:
        if self._consumer is None or self._closed or time.monotonic() - self._polled_at < KEEP_ALIVE_SECONDS:
            return
        # A poll with every lane paused: it resets kafka-python's poll timer and rejoins a
        # rebalance (heartbeats come from its own thread), and consumes nothing (whatever it
        # returns is rewound).
        try:
            await asyncio.wrap_future(self._executor.submit(self._keep_alive_sync))
        except Exception as exc:
            # Never fatal to the router's loop: the next fetch meets the same trouble and
            # reports (and retries) it.
            allowed, suppressed = self._keep_alive_log.allow("failed")
            if allowed:
                log.warning(
                    kv(
                        "kafka.keep_alive_failed",
                        group=self.settings.group_id,
                        error=describe(exc),
                        suppressed=suppressed or None,
                    )
                )

    def _keep_alive_sync(self) -> None:
        if self._consumer is not None and time.monotonic() - self._polled_at >= KEEP_ALIVE_SECONDS:
            self._poll(self._consumer, frozenset(), 1, 0.0)

    def _poll(self, consumer: KafkaConsumer, wanted: frozenset[str], max_records: int, timeout: float) -> list[Record]:
        """One poll on the consumer thread: records of the wanted lanes, high lane first."""
        self._finish_rebalance(consumer)
        records = self._poll_once(consumer, wanted, max_records, timeout)
        # A rejoin this poll began must end inside a poll too (see _finish_rebalance).
        try:
            self._finish_rebalance(consumer)
        except BaseException:
            # The positions have moved past these records: put them back before failing (a
            # consumer too broken even for that is rebuilt from the committed offsets anyway).
            with suppress(Exception):
                self._rewind(consumer, first_offsets(records))
            raise
        return records

    def _finish_rebalance(self, consumer: KafkaConsumer) -> None:
        """While this member is rejoining the group, poll back to back until it is done.

        Works around two kafka-python (3.0.12) faults with a join that outlives one poll:
        - a join answer that arrives between two polls is dropped and a new JoinGroup sent
          (the group rebalances again if this member leads it); back-to-back polls leave it
          little gap to land in;
        - a rejoin that a metadata change started (every router's second join: its first runs
          before it has the topics' partitions) is no longer wanted once the leader has
          assigned, so no later poll finishes it: the member stays REBALANCING, without
          heartbeats, until the group drops it. Seen in CI under load: a router with no
          partitions for 70 s.
        request_rejoin() on every pass keeps the join wanted (kafka-python clears it only
        when a join succeeds), so each poll waits on the join in flight instead of skipping it.
        Bounded by the session timeout so that a fetch is not held much longer than a
        rebalance normally takes; a join still in flight then stays wanted, and the next poll
        goes on waiting for it. Each _poll can so wait up to twice that (before and after).
        """
        coordinator = getattr(consumer, "_coordinator", None)
        deadline = time.monotonic() + self.settings.session_timeout_ms / 1000
        while (
            consumer.group_metadata().state == MemberState.REBALANCING
            and not self._closed
            and time.monotonic() < deadline
        ):
            if coordinator is not None:
                if not coordinator.need_rejoin():
                    log.info(kv("kafka.rejoin_resumed", group=self.settings.group_id))
                coordinator.request_rejoin()
            self._poll_once(consumer, frozenset(), 1, REJOIN_POLL_SECONDS)

    def _poll_once(
        self, consumer: KafkaConsumer, wanted: frozenset[str], max_records: int, timeout: float
    ) -> list[Record]:
        self._apply_pauses(consumer, wanted)
        self._polled_at = time.monotonic()
        try:
            batches = consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        finally:
            self._polled_at = time.monotonic()
        by_lane: dict[str, list[Record]] = {lane: [] for lane in LANES}
        stray: dict[TopicPartition, int] = {}
        for tp, messages in batches.items():
            lane = self.settings.lane_of_topic.get(tp.topic)
            if not messages or lane is None:
                continue
            if lane not in wanted:
                # Assigned during this poll (a rebalance), so not paused in time.
                stray[tp] = messages[0].offset
                continue
            for message in messages:  # offset order within the partition
                try:
                    envelope = delivery_pb2.Envelope.FromString(message.value)
                except DecodeError as exc:
                    # Not ours to route. Later commits on this partition step over it.
                    DROPPED.labels("undecodable").inc()
                    log.warning(
                        kv(
                            "kafka.bad_record",
                            topic=tp.topic,
                            partition=tp.partition,
                            offset=message.offset,
                            error=str(exc),
                        )
                    )
                    continue
                by_lane[lane].append(Record(lane, envelope, (tp.topic, tp.partition, message.offset)))
        if stray:
            self._rewind(consumer, stray)
        return [record for lane in LANES for record in by_lane[lane]]

    def _apply_pauses(self, consumer: KafkaConsumer, wanted: frozenset[str]) -> None:
        assigned = consumer.assignment() or set()
        paused = consumer.paused()
        lane_of = self.settings.lane_of_topic
        pause = [tp for tp in assigned if lane_of.get(tp.topic) not in wanted and tp not in paused]
        resume = [tp for tp in assigned if lane_of.get(tp.topic) in wanted and tp in paused]
        if pause:
            consumer.pause(*pause)
        if resume:
            consumer.resume(*resume)

    def _rewind(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Seek partitions back so records fetched but not handed out are fetched again."""
        assigned = consumer.assignment() or set()
        for tp, offset in offsets.items():
            # A partition we lost is re-read by its new owner from the committed offset.
            if tp in assigned:
                consumer.seek(tp, offset)
                consumer.pause(tp)

    def _rewind_unreturned(self, job: concurrent.futures.Future[list[Record]]) -> None:
        if job.cancelled() or job.exception() is not None or self._consumer is None:
            return
        first = first_offsets(job.result())
        if first:
            self._rewind(self._consumer, first)
            log.info(kv("kafka.fetch_cancelled", rewound=len(first)))

    async def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            topic, partition, offset = record.position
            tp = TopicPartition(topic, partition)
            # Kafka's committed offset is the next one to read, hence +1.
            offsets[tp] = max(offsets.get(tp, 0), offset + 1)
        if not offsets and not self._pending:
            return
        self._require()
        await asyncio.wrap_future(self._executor.submit(self._commit_sync, offsets))

    def _commit_sync(self, offsets: dict[TopicPartition, int]) -> None:
        if self._consumer is not None:
            self._commit_with(self._consumer, offsets)

    def _commit_with(self, consumer: KafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """On the consumer thread. Never raises for Kafka trouble: see the comments below.

        Raising would make the router route the whole batch again (duplicates on every
        device) although nothing is lost: commits are cumulative per partition, so the next
        successful commit covers this one, and at worst the records are redelivered.
        """
        assigned = consumer.assignment() or set()
        with self._lock:
            for tp, offset in self._pending.items():
                offsets[tp] = max(offsets.get(tp, 0), offset)
            self._pending.clear()
            # Never commit for a partition we no longer own: its new owner reads from the
            # committed offset, and we would move it under the owner's feet.
            todo = {
                tp: offset for tp, offset in offsets.items() if tp in assigned and offset > self._committed.get(tp, -1)
            }
        skipped = len(offsets) - len(todo)
        if not todo:
            return
        try:
            consumer.commit(
                {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in todo.items()},
                timeout_ms=self.settings.connect_timeout_ms,
            )
        except (kafka_errors.CommitFailedError, kafka_errors.RebalanceInProgressError) as exc:
            # A rebalance took (or is taking) these partitions. Whoever owns them next reads
            # from the last committed offset: these records are delivered again, by design.
            log.warning(
                kv(
                    "kafka.commit_rejected",
                    group=self.settings.group_id,
                    partitions=len(todo),
                    error=describe(exc),
                    detail="rebalance; uncommitted records will be redelivered",
                )
            )
            return
        except kafka_errors.KafkaError as exc:
            # Transient (coordinator moved, timeout, broker down): retry with the next commit.
            with self._lock:
                for tp, offset in todo.items():
                    self._pending[tp] = max(self._pending.get(tp, 0), offset)
            log.warning(
                kv(
                    "kafka.commit_failed",
                    group=self.settings.group_id,
                    partitions=len(todo),
                    error=describe(exc),
                    detail="will retry with the next commit",
                )
            )
            return
        with self._lock:
            for tp, offset in todo.items():
                # The listener may have dropped tp meanwhile (revoked); then forget it.
                if tp in (consumer.assignment() or set()):
                    self._committed[tp] = max(self._committed.get(tp, -1), offset)
        if skipped:
            log.debug(kv("kafka.commit_skipped", partitions=skipped, detail="not owned or already committed"))

    def _forget(self, partitions: Iterable[TopicPartition], why: str) -> None:
        """From the rebalance listener: drop bookkeeping for partitions we no longer own."""
        partitions = list(partitions)
        with self._lock:
            for tp in partitions:
                self._committed.pop(tp, None)
                self._pending.pop(tp, None)
        if partitions:
            log.info(kv(f"kafka.partitions_{why}", group=self.settings.group_id, partitions=len(partitions)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._consumer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_sync)
            log.info(kv("kafka.consumer_closed", group=self.settings.group_id))
        self._executor.shutdown(wait=False)

    def _close_sync(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        with self._lock:
            pending = bool(self._pending)
        if pending:
            self._commit_with(consumer, {})  # last try for commits that failed transiently
        # close() sends LeaveGroup, so the surviving routers get these partitions at once
        # instead of after the session timeout. No autocommit: only commit() commits.
        consumer.close(autocommit=False, timeout_ms=self.settings.connect_timeout_ms)


def first_offsets(records: Iterable[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset of the first of these records: where to seek to read them again."""
    first: dict[TopicPartition, int] = {}
    for record in records:
        topic, partition, offset = record.position
        tp = TopicPartition(topic, partition)
        first[tp] = min(first.get(tp, offset), offset)
    return first
