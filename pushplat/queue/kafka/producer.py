"""KafkaLaneProducer: publishes envelopes (and receipt events) from one dedicated thread.

A kafka-python producer can get stuck for good: when a batch it had already sent expires (the
broker was down, or slow, for longer than the publish timeout), its idempotent producer drops
its producer id and, in kafka-python 3.0, never asks for a new one, so it never sends again.
Sequence errors (OutOfOrderSequenceNumber and kin) leave a producer just as unusable. The
remedy, as the Kafka docs say, is a new producer (a new producer id): after an expired batch,
such an error, or a record left unanswered past kafka-python's own delivery timeout, one is
built as soon as the broker answers and takes over from the old one (see `_renew`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaProducer

from pushplat.logs import kv
from pushplat.messages import LANES
from pushplat.metrics import KAFKA_PRODUCER_RESETS
from pushplat.queue.base import LaneProducer, QueueUnavailable, target_key
from pushplat.queue.kafka.admin import build_closing_on_failure, ensure_topics
from pushplat.queue.kafka.settings import KafkaSettings, describe
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.queue.kafka")

# Broker answers after which an idempotent producer's sequence numbers are out of step with the
# broker's for good; kafka-python raises plain KafkaError / IllegalStateError from send() once
# its producer is in a fatal state.
_NEEDS_NEW_PRODUCER = (
    kafka_errors.OutOfOrderSequenceNumberError,
    kafka_errors.UnknownProducerIdError,
    kafka_errors.InvalidProducerEpochError,
    kafka_errors.ProducerFencedError,
)
_FATAL_STATE = (kafka_errors.KafkaError, kafka_errors.IllegalStateError)
# kafka-python answers every record it took within its delivery timeout (the publish timeout);
# a record still unanswered this long after that means its sender thread has stopped sending.
STUCK_GRACE_SECONDS = 1.0
# Between attempts to build the replacement while the broker is still away. Each attempt itself
# keeps trying to reach the broker for --kafka-connect-timeout-seconds, so this pause is short.
RENEW_PAUSE_SECONDS = 1.0


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
        # Bumped on the producer thread whenever a new producer takes over: a failure reported
        # by an older one says nothing about the current one.
        self._generation = 0
        self._renewal: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
            loop = self._loop = asyncio.get_running_loop()
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
        if pending.unanswered():
            check_at = pending.handed_at + self.settings.publish_timeout + STUCK_GRACE_SECONDS
            loop.call_later(max(check_at - time.monotonic(), 0.0), self._check_unanswered, pending)
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
        producer, generation = self._producer, self._generation
        for topic, records, pending, what in jobs:
            if producer is None or self._closed:
                pending.fail_rest(QueueUnavailable("the Kafka producer is closed"))
                continue
            pending.handed_at, pending.generation = time.monotonic(), generation
            for index, (key, value) in enumerate(records):
                try:
                    future = producer.send(topic, value=value, key=key)
                except Exception as exc:  # e.g. no metadata within max_block_ms
                    self._check_failure(exc, generation)
                    pending.fail_rest(QueueUnavailable(f"cannot publish {what} to {topic}: {describe(exc)}"), index)
                    break
                future.add_callback(pending.acked, index)
                future.add_errback(self._record_failed, pending, index, generation)

    def _record_failed(self, pending: _Acks, index: int, generation: int, error: BaseException) -> None:
        """On kafka-python's sender thread: a record failed."""
        self._check_failure(error, generation)
        pending.failed(index, error)

    def _check_failure(self, error: BaseException, generation: int) -> None:
        """Any thread: replace the producer if this failure may leave it unusable. An expiry does
        only if the batch had been sent, which kafka-python does not say: a needless renewal
        costs a reconnect, a missed one every later Send."""
        if isinstance(error, kafka_errors.KafkaTimeoutError):
            self._renew_threadsafe("timeout", describe(error), generation)
        elif isinstance(error, _NEEDS_NEW_PRODUCER) or type(error) in _FATAL_STATE:
            self._renew_threadsafe("producer_state", describe(error), generation)

    def _check_unanswered(self, pending: _Acks) -> None:
        """On the loop, a grace period after kafka-python's delivery timeout for this publish."""
        if pending.unanswered():
            waited = time.monotonic() - pending.handed_at
            detail = f"a record handed to kafka-python {waited:.1f}s ago has had no answer"
            self._renew_soon("unanswered", detail, pending.generation)

    def _renew_threadsafe(self, reason: str, detail: str, generation: int) -> None:
        loop = self._loop
        if loop is not None:
            with suppress(RuntimeError):  # the loop is closed: so is the api
                loop.call_soon_threadsafe(self._renew_soon, reason, detail, generation)

    def _renew_soon(self, reason: str, detail: str, generation: int) -> None:
        """On the loop: start replacing the producer, unless a replacement is under way, the
        failure came from a producer already replaced, or we are closing."""
        if self._closed or self._renewal is not None or generation != self._generation:
            return
        self._renewal = asyncio.create_task(self._renew(reason, detail))

    async def _renew(self, reason: str, detail: str) -> None:
        """Build a new producer (a new producer id) as soon as the broker answers, then swap it
        in on the producer thread. Until then the old one stays, and Sends keep answering
        UNAVAILABLE within the publish timeout, as they would with a healthy producer."""
        loop = asyncio.get_running_loop()
        started, attempts = time.monotonic(), 0
        try:
            while not self._closed:
                attempts += 1
                opening = loop.run_in_executor(None, self._open)
                try:
                    fresh = await asyncio.shield(opening)
                except asyncio.CancelledError:
                    opening.add_done_callback(_discard_when_built)
                    raise
                except Exception:  # the broker is still away
                    await asyncio.sleep(RENEW_PAUSE_SECONDS)
                    continue
                try:
                    swapped = await loop.run_in_executor(self._executor, self._swap, fresh)
                except RuntimeError:  # the executor is shut down: we are closing
                    await asyncio.to_thread(_discard, fresh, 0)
                    return
                if swapped:
                    KAFKA_PRODUCER_RESETS.inc()
                    log.warning(
                        kv(
                            "kafka.producer_reset",
                            reason=reason,
                            detail=detail,
                            brokers=self.settings.where,
                            attempts=attempts,
                            took_ms=int((time.monotonic() - started) * 1000),
                        )
                    )
                return
        finally:
            self._renewal = None

    def _swap(self, fresh: KafkaProducer) -> bool:
        """On the producer thread, between two jobs: discard the old producer, then hand every
        later record to the fresh one. The old one's unacknowledged records fail first (their
        Sends answer UNAVAILABLE), so no record it still held can be acked after one of the
        fresh producer's: accepted messages keep their order."""
        if self._closed:
            _discard(fresh, 0)
            return False
        old, self._producer = self._producer, None
        if old is not None:
            _discard(old, self.settings.publish_timeout)
        self._producer = fresh
        self._generation += 1
        return True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._renewal is not None:
            self._renewal.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewal
        producer, self._producer = self._producer, None
        if producer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._close_producer, producer)
            log.info(kv("kafka.producer_closed", brokers=self.settings.where))
        self._executor.shutdown(wait=False)

    def _close_producer(self, producer: KafkaProducer) -> None:
        """close() first flushes what is still buffered (bounded): publishes in flight get their
        answer rather than a silent drop. A stuck producer never flushes, and kafka-python's
        close() then raises without closing: discard it."""
        try:
            producer.close(timeout=self.settings.publish_timeout)
        except kafka_errors.KafkaTimeoutError:
            log.warning(kv("kafka.producer_close_timeout", brokers=self.settings.where, detail="records left unacked"))
            _discard(producer, 0)


def _discard(producer: KafkaProducer, join_timeout: float) -> None:
    """Close a producer without waiting for its outstanding records, which fail. kafka-python's
    close() flushes first, and raises rather than closing while records are outstanding, so
    its sender thread is stopped first (kafka-python's own force-close path)."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(join_timeout)
    with suppress(Exception):
        producer.close(timeout=0)


def _discard_when_built(opening: asyncio.Future[KafkaProducer]) -> None:
    """A replacement that finished building after its renewal was cancelled (we are closing)."""
    if not opening.cancelled() and opening.exception() is None:
        threading.Thread(target=_discard, args=(opening.result(), 0), daemon=True).start()


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
        # Set on the producer thread when the records go to kafka-python (0.0: not yet).
        self.handed_at = 0.0
        self.generation = 0

    def unanswered(self) -> bool:
        """Whether kafka-python took some of these records and has answered not all of them."""
        return bool(self.handed_at) and any(error is _UNANSWERED for error in self.errors)

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
