"""Receipts beyond one process: the last states in Redis, and events on Kafka `<prefix>.receipts`.

Receipts are best effort: a failing Redis or Kafka costs status detail, never a message, so
errors are logged and counted here and never reach the delivery path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pushplat_client.v1 import push_pb2

from pushplat.logs import kv
from pushplat.metrics import RECEIPT_ERRORS
from pushplat.receipts.base import ReceiptEvent, Receipts
from pushplat.receipts.status_redis import RedisStatusStore

log = logging.getLogger("pushplat.receipts")


class KafkaReceiptEvents:
    """Publishes each receipt, keyed by message id, to `<prefix>.receipts` in the background.

    In the api process it shares the lanes' producer: one kafka-python producer (and sender
    thread) per process instead of two, and receipts ride in the same requests as messages."""

    def __init__(self, config: Any, producer: Any = None) -> None:
        from pushplat.queue.kafka import KafkaLaneProducer, KafkaSettings

        settings = KafkaSettings.from_config(config)
        self.topic = f"{settings.topic_prefix}.receipts"
        settings.topics = {"receipts": self.topic}
        self._settings = settings
        self._owned = not isinstance(producer, KafkaLaneProducer)
        self._producer = KafkaLaneProducer(settings) if self._owned else producer
        self._pending: set[asyncio.Task[None]] = set()
        self._backlog = 0  # receipts handed over and not yet acked or failed
        # Receipts waiting for Kafka beyond this are dropped (and counted) rather than buffered
        # without bound while Kafka is down: the buffer's own bound, so one full flush fits.
        self._max_backlog = max(1, int(config.receipt_buffer_entries))

    async def start(self) -> None:
        if self._owned:
            await self._producer.start()  # creates the receipts topic too
            return
        from pushplat.queue.kafka.admin import ensure_topics

        # The shared producer created the lanes; the receipts topic is this one's to create.
        try:
            await asyncio.get_running_loop().run_in_executor(None, ensure_topics, self._settings)
        except Exception as exc:
            raise self._settings.unreachable(exc) from exc

    def publish(self, receipts: Sequence[ReceiptEvent]) -> None:
        room = self._max_backlog - self._backlog
        if room < len(receipts):
            # Keep what fits (oldest first); count the rest.
            RECEIPT_ERRORS.labels("events_backlog").inc(len(receipts) - max(room, 0))
            receipts = receipts[: max(room, 0)]
            if not receipts:
                return
        # One background task per flush, not per receipt: one hop to the producer thread,
        # and a slow Kafka does not hold up the status table.
        self._backlog += len(receipts)
        task = asyncio.create_task(self._send(receipts))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, receipts: Sequence[ReceiptEvent]) -> None:
        # The one protobuf of each state change, built here, off the hot path.
        records = [(r.message_id.encode(), r.to_proto().SerializeToString()) for r in receipts]
        try:
            await self._producer.publish_records(self.topic, records, f"{len(records)} receipts")
        except Exception as exc:
            RECEIPT_ERRORS.labels("events").inc(len(records))
            log.debug(kv("receipts.publish_failed", receipts=len(records), error=str(exc)))
        finally:
            self._backlog -= len(records)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        if self._owned:
            await self._producer.close()


class DistributedReceipts(Receipts):
    def __init__(self, status: RedisStatusStore, events: KafkaReceiptEvents | None, **buffer: Any) -> None:
        super().__init__(**buffer)
        self.status_store = status
        self.events = events

    @classmethod
    def from_config(cls, config: Any, producer: Any = None, **buffer: Any) -> DistributedReceipts:
        events = KafkaReceiptEvents(config, producer) if config.queue.startswith("kafka:") else None
        return cls(RedisStatusStore.from_url(config.registry), events, **buffer)

    async def start(self) -> None:
        if self.events is not None:
            await self.events.start()
        await super().start()

    async def _write(self, events: list[ReceiptEvent]) -> None:
        if self.events is not None:
            self.events.publish(events)
        await self.status_store.record(events)

    async def _read_status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        return await self.status_store.status(message_id, sender_id)

    async def _close(self) -> None:
        if self.events is not None:
            await self.events.close()
        await self.status_store.close()
