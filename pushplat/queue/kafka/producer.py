"""KafkaLaneProducer: publishes envelopes (and receipt events) from one dedicated thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from kafka import KafkaProducer

from pushplat.logs import kv
from pushplat.messages import LANES
from pushplat.queue.base import LaneProducer, QueueUnavailable, target_key
from pushplat.queue.kafka.admin import build_closing_on_failure, ensure_topics
from pushplat.queue.kafka.settings import KafkaSettings, describe
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.queue.kafka")


class KafkaLaneProducer(LaneProducer):
    """Publishes envelopes to the lane topics; `publish` returns once the broker acked."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.linger_ms = settings.linger_ms
        self.partition_counts: dict[str, int] = {}
        self._producer: KafkaProducer | None = None
        self._closed = False
        self._start_lock = asyncio.Lock()
        # One thread: send() calls reach the producer in the order publish() was called.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-producer")
        self._outbox: list[_Job] = []

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
                self.partition_counts = await loop.run_in_executor(self._executor, ensure_topics, self.settings)
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
        producer: KafkaProducer = build_closing_on_failure(
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

    async def publish_many(
        self, lane: str, envelopes: Sequence[delivery_pb2.Envelope]
    ) -> list[QueueUnavailable | None]:
        """All envelopes of one lane in one hop to the producer thread (kafka-python batches
        them per partition); per envelope, None once the broker acked it."""
        topic = self.settings.topics.get(lane)
        if topic is None:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        records = [(target_key(e).encode(), e.SerializeToString()) for e in envelopes]
        what = f"message {envelopes[0].message.message_id}" if len(envelopes) == 1 else f"{len(envelopes)} messages"
        return await self.publish_outcomes(topic, records, what)

    async def publish_record(self, topic: str, key: bytes, value: bytes, what: str) -> None:
        """Publish one record to any topic; return once the broker acked it."""
        await self.publish_records(topic, [(key, value)], what)

    async def publish_records(self, topic: str, records: Sequence[tuple[bytes, bytes]], what: str) -> None:
        """Publish (key, value) records in order with one hop to the producer thread; return once
        the broker acked them all, else raise the first failure."""
        for error in await self.publish_outcomes(topic, records, what):
            if error is not None:
                raise error

    async def publish_outcomes(
        self, topic: str, records: Sequence[tuple[bytes, bytes]], what: str
    ) -> list[QueueUnavailable | None]:
        """Publish records in order with one hop to the producer thread; per record, None once
        the broker acked it, else the QueueUnavailable that says why not."""
        if not records:
            return []
        if self._producer is None:
            # Not started (or start failed): connect now, bounded by the connect timeout.
            try:
                await self.start()
            except QueueUnavailable as exc:
                return [exc] * len(records)
        loop = asyncio.get_running_loop()
        pending = _Acks(len(records), loop)
        # One budget for the whole call; the extra second only guards against an ack that
        # never comes back at all (kafka-python fails the send itself after delivery_timeout).
        deadline = loop.time() + self.settings.publish_timeout + 1.0
        self._hand_over((topic, records, pending, what), loop)
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pending.done), max(deadline - loop.time(), 0.1))
        outcomes: list[QueueUnavailable | None] = []
        for error in pending.errors:
            if error is None or isinstance(error, QueueUnavailable):
                outcomes.append(error)
            elif error is _UNANSWERED:
                outcomes.append(
                    QueueUnavailable(
                        f"Kafka at {self.settings.where} did not ack {what} on {topic} "
                        f"within {self.settings.publish_timeout:g}s"
                    )
                )
            else:
                outcomes.append(
                    QueueUnavailable(
                        f"Kafka at {self.settings.where} did not take {what} on {topic}: {describe(error)}"
                    )
                )
        return outcomes

    def _hand_over(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        """Queue a publish for the producer thread. Publishes made in one turn of the event loop
        (64 concurrent Sends, say) go over in one hop: a thread hop costs more than a send()."""
        self._outbox.append(job)
        if len(self._outbox) == 1:
            loop.call_soon(self._flush_outbox)

    def _flush_outbox(self) -> None:
        jobs, self._outbox = self._outbox, []
        try:
            self._executor.submit(self._send_jobs, jobs)
        except RuntimeError as exc:  # the executor is shut down: the producer is closed
            for _, _, pending, _ in jobs:
                pending.fail_rest(QueueUnavailable(f"the Kafka producer is closed: {exc}"))

    def _send_jobs(self, jobs: list[_Job]) -> None:
        """On the producer thread: hand each job's records to kafka-python in order; their acks
        go to the job's _Acks. A failure fails that job's records that were not handed over."""
        producer = self._producer
        for topic, records, pending, what in jobs:
            if producer is None or self._closed:
                pending.fail_rest(QueueUnavailable("the Kafka producer is closed"))
                continue
            for index, (key, value) in enumerate(records):
                try:
                    future = producer.send(topic, value=value, key=key)
                except Exception as exc:  # e.g. no metadata within max_block_ms
                    pending.fail_rest(QueueUnavailable(f"cannot publish {what} to {topic}: {describe(exc)}"), index)
                    break
                future.add_callback(pending.acked, index)
                future.add_errback(pending.failed, index)

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


_UNANSWERED: Any = object()
# topic, (key, value) records, their acks, and what they are (for messages)
_Job = tuple[str, Sequence[tuple[bytes, bytes]], "_Acks", str]


class _Acks:
    """The acks of one publish call. kafka-python answers each record on its sender thread;
    the event loop is woken once, when the last one is in, instead of once per record."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.errors: list[Any] = [_UNANSWERED] * count
        self.done: asyncio.Future[None] = loop.create_future()
        self._left = count
        self._lock = threading.Lock()
        self._loop = loop

    def acked(self, index: int, _metadata: object = None) -> None:
        self._answer(index, None)

    def failed(self, index: int, error: BaseException) -> None:
        self._answer(index, error)

    def fail_rest(self, error: BaseException, start: int = 0) -> None:
        """Records from start on that were never handed over (or not answered yet) failed."""
        for index in range(start, len(self.errors)):
            self._answer(index, error, only_if_unanswered=True)

    def _answer(self, index: int, error: BaseException | None, only_if_unanswered: bool = False) -> None:
        with self._lock:
            if self.errors[index] is not _UNANSWERED:
                if only_if_unanswered:
                    return
            else:
                self._left -= 1
            self.errors[index] = error
            last = self._left == 0
        if last:
            with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
