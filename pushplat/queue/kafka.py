"""Apache Kafka lanes: one topic per priority (`<prefix>.high`, `<prefix>.normal`, `<prefix>.low`).

The api publishes with `KafkaLaneProducer`; routers form one consumer group and read with
`KafkaLaneConsumer`. Records are keyed by target, so one target's messages share a partition
and stay in order. Delivery is at-least-once: an offset is committed only after the router
has routed the record, and anything fetched but not committed (a crash, a rebalance) is
delivered again; devices dedup by message_id.

kafka-python is a blocking library, so nothing here calls it on the event loop:

- The producer's `send()` runs on one dedicated thread. `send()` only appends to the
  producer's buffer (it blocks only for metadata or a full buffer), so one thread keeps up,
  and a single FIFO thread means publishes reach Kafka in the order they were made. The
  broker's ack arrives on kafka-python's sender thread and is handed to the waiting
  coroutine with `loop.call_soon_threadsafe`.
- A `KafkaConsumer` is not thread-safe, so every call on it (construct, subscribe, poll,
  pause, seek, commit, close) runs on one dedicated single-thread executor owned by that
  consumer. The only code that runs elsewhere is the rebalance listener, which kafka-python
  calls on its own IO thread; it touches only our lock-protected bookkeeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import urlparse

import kafka.errors as kafka_errors
from google.protobuf.message import DecodeError
from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import MemberState, OffsetAndMetadata, TopicPartition

from pushplat.logs import kv
from pushplat.messages import LANES
from pushplat.metrics import DROPPED
from pushplat.queue.base import LaneConsumer, LaneProducer, QueueUnavailable, Record, target_key
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.queue.kafka")

__all__ = ["KafkaLaneConsumer", "KafkaLaneProducer", "KafkaSettings", "parse_kafka_url", "topic_names"]

DEFAULT_PORT = 9092
T = TypeVar("T")


def parse_kafka_url(url: str) -> list[str]:
    """`kafka://host:port[,host:port]` -> ["host:port", ...]; a ValueError says what is wrong."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise ValueError(f"unsupported Kafka URL {url!r}: use kafka://host:port[,host:port]")
    brokers = []
    for part in parsed.netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), str(DEFAULT_PORT)
        if not host or not port.isdigit():
            raise ValueError(f"bad broker {part!r} in Kafka URL {url!r}: use host:port")
        brokers.append(f"{host}:{port}")
    return brokers


def topic_names(prefix: str) -> dict[str, str]:
    """lane -> topic."""
    return {lane: f"{prefix}.{lane}" for lane in LANES}


class KafkaSettings:
    """What both ends need to reach the lanes; filled from Config by `from_config`.

    Config fields read (all but `queue` and `topic_prefix` optional, defaults in brackets):
    kafka_partitions [6] and kafka_replication [1] for topics this creates,
    kafka_connect_timeout_seconds [10], kafka_publish_timeout_seconds [10],
    kafka_group_id [<prefix>.routers], kafka_session_timeout_ms [10000],
    kafka_heartbeat_interval_ms [min(3000, session/3)].
    """

    def __init__(
        self,
        brokers: Sequence[str],
        topic_prefix: str = "pushplat",
        *,
        partitions: int = 6,
        replication: int = 1,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        client_id: str = "pushplat",
        group_id: str = "",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 0,
    ) -> None:
        self.brokers = list(brokers)
        self.topic_prefix = topic_prefix
        self.topics = topic_names(topic_prefix)
        self.lane_of_topic = {topic: lane for lane, topic in self.topics.items()}
        self.partitions = partitions
        self.replication = replication
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.client_id = client_id
        self.group_id = group_id or f"{topic_prefix}.routers"
        self.session_timeout_ms = session_timeout_ms
        # Members learn of a rebalance from a heartbeat response, so this bounds how long a
        # joining or leaving router waits for the others; Kafka's usual 3 s by default.
        self.heartbeat_interval_ms = heartbeat_interval_ms or max(500, min(3000, session_timeout_ms // 3))

    @classmethod
    def from_config(cls, config: Any) -> KafkaSettings:
        # getattr with defaults: the Kafka knobs are optional on Config, so a Config without
        # them (or a test's stand-in object) still works.
        return cls(
            parse_kafka_url(config.queue),
            config.topic_prefix,
            partitions=int(getattr(config, "kafka_partitions", 6)),
            replication=int(getattr(config, "kafka_replication", 1)),
            connect_timeout=float(getattr(config, "kafka_connect_timeout_seconds", 10.0)),
            publish_timeout=float(getattr(config, "kafka_publish_timeout_seconds", 10.0)),
            client_id=f"pushplat-{getattr(config, 'edge_id', '') or 'node'}",
            group_id=str(getattr(config, "kafka_group_id", "") or ""),
            session_timeout_ms=int(getattr(config, "kafka_session_timeout_ms", 10_000)),
            heartbeat_interval_ms=int(getattr(config, "kafka_heartbeat_interval_ms", 0)),
        )

    @property
    def where(self) -> str:
        return ",".join(self.brokers)

    @property
    def connect_timeout_ms(self) -> int:
        return max(1, int(self.connect_timeout * 1000))

    def unreachable(self, exc: BaseException) -> QueueUnavailable:
        return QueueUnavailable(f"cannot reach Kafka at {self.where}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def _build_closing_on_failure(build: Callable[[Callable[..., Any]], T], default_client: Callable[..., Any]) -> T:
    """Construct a kafka-python client; if its constructor raises, close what it opened.

    KafkaConsumer and KafkaAdminClient start an IO thread before they bootstrap, and a
    constructor that raises leaves that thread (and its sockets) behind with no handle to
    close it. Passing our own `kafka_client` factory gives us that handle.
    """
    opened: list[Any] = []

    def factory(**configs: Any) -> Any:
        client = default_client(**configs)
        opened.append(client)
        return client

    try:
        return build(factory)
    except BaseException:
        for client in opened:
            with suppress(Exception):
                client.close()
        raise


def _ensure_topics(settings: KafkaSettings) -> dict[str, int]:
    """Create the lane topics that are missing; return topic -> partition count. Blocking.

    Topics are created here, explicitly, and every client runs with
    allow_auto_create_topics=False: a broker with auto.create.topics.enable would otherwise
    create a lane on first use with the broker's default partition count.
    """
    timeout_ms = settings.connect_timeout_ms
    admin = _build_closing_on_failure(
        lambda factory: KafkaAdminClient(
            bootstrap_servers=settings.brokers,
            client_id=f"{settings.client_id}-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            kafka_client=factory,
        ),
        KafkaAdminClient.DEFAULT_CONFIG["kafka_client"],
    )
    try:
        wanted = list(settings.topics.values())
        existing = set(admin.list_topics())
        missing = [topic for topic in wanted if topic not in existing]
        if missing:
            spec = {
                t: {"num_partitions": settings.partitions, "replication_factor": settings.replication} for t in missing
            }
            result = admin.create_topics(spec, timeout_ms=timeout_ms, raise_errors=False)
            for topic in result["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                # Another api or router may have created it between list and create.
                if error is kafka_errors.TopicAlreadyExistsError:
                    continue
                if error is not kafka_errors.NoError:
                    raise QueueUnavailable(
                        f"cannot create Kafka topic {topic['name']} ({settings.partitions} partitions, "
                        f"replication {settings.replication}) at {settings.where}: "
                        f"{error.__name__}: {topic.get('error_message') or ''}".rstrip(": ")
                    )
                log.info(
                    kv(
                        "kafka.topic_created",
                        topic=topic["name"],
                        partitions=settings.partitions,
                        replication=settings.replication,
                    )
                )
        # CreateTopics returns before every partition has a leader; wait so that the first
        # publish does not stall on metadata.
        admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
        counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(wanted)}
        for topic, count in counts.items():
            if count != settings.partitions:
                # Not an error: partitions can only grow, and an operator may have grown them.
                log.info(kv("kafka.topic_partitions", topic=topic, partitions=count, configured=settings.partitions))
        return counts
    finally:
        with suppress(Exception):
            admin.close()


class KafkaLaneProducer(LaneProducer):
    """Publishes envelopes to the lane topics; `publish` returns once the broker acked."""

    def __init__(self, settings: KafkaSettings, linger_ms: int = 3) -> None:
        self.settings = settings
        self.linger_ms = linger_ms
        self.partition_counts: dict[str, int] = {}
        self._producer: KafkaProducer | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        # One thread: send() calls reach the producer in the order publish() was called.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-producer")

    @classmethod
    def from_config(cls, config: Any) -> KafkaLaneProducer:
        return cls(KafkaSettings.from_config(config))

    async def start(self) -> None:
        if self._producer is not None:
            return
        if self._closed:
            raise QueueUnavailable("the Kafka producer is closed")
        async with self._start_lock:
            if self._producer is not None:
                return
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            try:
                self.partition_counts = await loop.run_in_executor(self._executor, _ensure_topics, self.settings)
                self._producer = await loop.run_in_executor(self._executor, self._open)
            except QueueUnavailable:
                raise
            except Exception as exc:
                raise self.settings.unreachable(exc) from exc
            log.info(
                kv(
                    "kafka.producer_started",
                    brokers=self.settings.where,
                    prefix=self.settings.topic_prefix,
                    api_version=".".join(map(str, self._producer.config["api_version"])),
                    idempotent=self._producer.config["enable_idempotence"],
                    took_ms=int((time.monotonic() - started) * 1000),
                )
            )

    def _open(self) -> KafkaProducer:
        settings = self.settings
        publish_ms = max(1000, int(settings.publish_timeout * 1000))
        producer: KafkaProducer = _build_closing_on_failure(
            lambda factory: KafkaProducer(
                bootstrap_servers=settings.brokers,
                client_id=f"{settings.client_id}-producer",
                # All in-sync replicas hold the record before publish() reports it accepted.
                acks="all",
                # enable_idempotence is left at kafka-python's default (on): it is switched
                # off with a warning for brokers older than 0.11, where passing it would fail.
                # Idempotence gives ordered, duplicate-free retries with 5 requests in flight.
                linger_ms=self.linger_ms,
                # The whole budget for one record, retries included (retries are unlimited
                # within it). request_timeout is half of it, so one retry always fits.
                delivery_timeout_ms=publish_ms,
                request_timeout_ms=max(500, (publish_ms - self.linger_ms) // 2),
                # send() blocks only for metadata or a full buffer; bound that wait too.
                max_block_ms=min(settings.connect_timeout_ms, publish_ms),
                bootstrap_timeout_ms=settings.connect_timeout_ms,
                # After a broker restart, reconnect within seconds rather than the 30 s default.
                reconnect_backoff_max_ms=2000,
                allow_auto_create_topics=False,
                kafka_client=factory,
            ),
            KafkaProducer.DEFAULT_CONFIG["kafka_client"],
        )
        try:
            if not producer.config["enable_idempotence"]:
                log.warning(kv("kafka.not_idempotent", detail="broker too old: retries may reorder or duplicate"))
            # Load the lanes' metadata now, so the first publish does not wait for it.
            for topic in settings.topics.values():
                producer.partitions_for(topic)
        except BaseException:
            producer.close(timeout=0)
            raise
        return producer

    async def publish(self, lane: str, envelope: delivery_pb2.Envelope) -> None:
        topic = self.settings.topics.get(lane)
        if topic is None:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        if self._producer is None:
            # Not started (or start failed): connect now, bounded by the connect timeout.
            await self.start()
        await self.publish_record(
            topic, target_key(envelope).encode(), envelope.SerializeToString(), f"message {envelope.message.message_id}"
        )

    async def publish_record(self, topic: str, key: bytes, value: bytes, what: str) -> None:
        """Publish one record to any topic; return once the broker acked it."""
        await self.publish_records(topic, [(key, value)], what)

    async def publish_records(self, topic: str, records: Sequence[tuple[bytes, bytes]], what: str) -> None:
        """Publish (key, value) records in order with one hop to the producer thread; return once
        the broker acked them all."""
        if self._producer is None:
            await self.start()
        loop = asyncio.get_running_loop()
        acks: list[asyncio.Future[None]] = [loop.create_future() for _ in records]
        # One budget for the whole call; the extra second only guards against an ack that
        # never comes back at all (kafka-python fails the send itself after delivery_timeout).
        deadline = loop.time() + self.settings.publish_timeout + 1.0
        try:
            await loop.run_in_executor(self._executor, self._send_all, topic, records, acks, loop)
        except QueueUnavailable:
            raise
        except Exception as exc:
            raise QueueUnavailable(f"cannot publish {what} to {topic}: {_describe(exc)}") from exc
        try:
            await asyncio.wait_for(asyncio.gather(*acks), max(deadline - loop.time(), 0.1))
        except TimeoutError:
            raise QueueUnavailable(
                f"Kafka at {self.settings.where} did not ack {what} on {topic} "
                f"within {self.settings.publish_timeout:g}s"
            ) from None
        except kafka_errors.KafkaError as exc:
            raise QueueUnavailable(
                f"Kafka at {self.settings.where} did not take {what} on {topic}: {_describe(exc)}"
            ) from exc

    def _send_all(
        self,
        topic: str,
        records: Sequence[tuple[bytes, bytes]],
        acks: list[asyncio.Future[None]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        for (key, value), acked in zip(records, acks, strict=True):
            self._send(topic, key, value, acked, loop)

    def _send(
        self, topic: str, key: bytes, value: bytes, acked: asyncio.Future[None], loop: asyncio.AbstractEventLoop
    ) -> None:
        """On the producer thread: hand the record to kafka-python, bridge its ack to `acked`."""
        producer = self._producer
        if producer is None or self._closed:
            raise QueueUnavailable("the Kafka producer is closed")

        def settle(error: BaseException | None) -> None:
            # On the event loop. The waiter may have timed out or been cancelled already.
            if acked.done():
                return
            if error is None:
                acked.set_result(None)
            else:
                acked.set_exception(error)

        def resolve(error: BaseException | None) -> None:
            # On kafka-python's sender thread: never touch the asyncio future here.
            with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(settle, error)

        future = producer.send(topic, value=value, key=key)
        future.add_callback(lambda _metadata: resolve(None))
        future.add_errback(resolve)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is not None:
            loop = asyncio.get_running_loop()
            # close() first flushes what is still buffered (bounded): publishes in flight get
            # their answer rather than a silent drop.
            await loop.run_in_executor(self._executor, lambda: producer.close(timeout=self.settings.publish_timeout))
            log.info(kv("kafka.producer_closed", brokers=self.settings.where))
        self._executor.shutdown(wait=False)


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: only records what changed, never calls the consumer."""

    def __init__(self, owner: KafkaLaneConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._owner._forget(revoked, "revoked")

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self._owner._forget(lost, "lost")

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        log.info(kv("kafka.partitions_assigned", group=self._owner.settings.group_id, partitions=",".join(partitions)))


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
                self.partition_counts = await loop.run_in_executor(self._executor, _ensure_topics, self.settings)
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
        consumer: KafkaConsumer = _build_closing_on_failure(
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
                request_timeout_ms=max(settings.connect_timeout_ms, 5000),
                reconnect_backoff_max_ms=2000,
                kafka_client=factory,
            ),
            KafkaConsumer.DEFAULT_CONFIG["kafka_client"],
        )
        try:
            consumer.subscribe(topics=list(settings.topics.values()), listener=_Listener(self))
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
            raise QueueUnavailable(f"cannot fetch from Kafka at {self.settings.where}: {_describe(exc)}") from exc

    def _fetch_sync(self, wanted: frozenset[str], max_records: int, timeout: float) -> list[Record]:
        return self._poll(self._require(), wanted, max_records, timeout)

    def _poll(self, consumer: KafkaConsumer, wanted: frozenset[str], max_records: int, timeout: float) -> list[Record]:
        """One poll on the consumer thread: records of the wanted lanes, high lane first."""
        self._apply_pauses(consumer, wanted)
        batches = consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
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
        first: dict[TopicPartition, int] = {}
        for record in job.result():
            topic, partition, offset = record.position
            tp = TopicPartition(topic, partition)
            first[tp] = min(first.get(tp, offset), offset)
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
                    error=_describe(exc),
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
                    error=_describe(exc),
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
