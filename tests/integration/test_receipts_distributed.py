"""DistributedReceipts on real Redis and Kafka: receipts recorded in one process reach the status
table that another reads within a flush window, without anyone awaiting them, and go to
<prefix>.receipts as one Receipt protobuf per state change; shutdown flushes what is left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from pushplat_client.v1 import push_pb2

from pushplat.config import Config
from pushplat.queue.kafka import parse_kafka_url
from pushplat.receipts.base import State, receipt
from pushplat.receipts.distributed import DistributedReceipts
from tests.helpers import delete_prefix, eventually, require_env, with_prefix

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ACCEPTED, DELIVERED, ACKED = (
    State.DELIVERY_STATE_ACCEPTED,
    State.DELIVERY_STATE_DELIVERED_TO_EDGE,
    State.DELIVERY_STATE_ACKED,
)


@pytest.fixture
async def open_receipts() -> AsyncIterator[Callable[..., DistributedReceipts]]:
    """open_receipts(**buffer): a DistributedReceipts on one shared Redis prefix and Kafka topic
    prefix for the whole test, like the api, router and edge processes of one deployment."""
    tag = uuid.uuid4().hex[:12]
    config = Config(
        registry=with_prefix(require_env("PUSHPLAT_TEST_REDIS_URL"), f"t{tag}"),
        queue=require_env("PUSHPLAT_TEST_KAFKA_URL"),
        topic_prefix=f"test-{tag}",
    )
    opened: list[DistributedReceipts] = []

    def make(**buffer: object) -> DistributedReceipts:
        receipts = DistributedReceipts.from_config(config, **buffer)
        opened.append(receipts)
        return receipts

    make.config = config  # type: ignore[attr-defined]
    yield make
    for receipts in opened:
        await receipts.close()
    if opened:
        await delete_prefix(opened[0].status_store)

    def drop_topics() -> None:
        admin = KafkaAdminClient(bootstrap_servers=parse_kafka_url(config.queue), bootstrap_timeout_ms=5000)
        try:
            admin.delete_topics([f"{config.topic_prefix}.receipts"], timeout_ms=5000, raise_errors=False)
        finally:
            admin.close()

    await asyncio.to_thread(drop_topics)


async def test_another_process_reads_the_status_after_a_flush_window(open_receipts) -> None:
    api, router, reader = open_receipts(flush_seconds=0.05), open_receipts(flush_seconds=0.05), open_receipts()
    for receipts in (api, router, reader):
        await receipts.start()
    api.record([receipt("m1", ACCEPTED, device_id="", user_id="kim", sender_id="billing", labels={"k": "v"})])
    router.record([receipt("m1", DELIVERED, device_id="phone", edge_id="e1")])
    router.record([receipt("m1", ACKED, device_id="phone")])

    async def acked() -> bool:
        status = await reader.status("m1", "billing")
        return status is not None and [(d.device_id, d.state) for d in status.devices] == [("phone", ACKED)]

    # The reader flushes only its own (empty) buffer: what it sees, the writers' flushers wrote.
    await eventually(acked, timeout=10, what="the status written by the other processes' background flush")
    status = await reader.status("m1", "billing")
    assert status is not None and dict(status.labels) == {"k": "v"} and status.devices[0].edge_id == "e1"
    assert await reader.status("m1", "marketing") is None


async def test_each_state_change_is_one_receipt_event_on_kafka(open_receipts) -> None:
    writer = open_receipts(flush_seconds=0.05)
    await writer.start()
    ids = [f"m{i}" for i in range(20)]
    for message_id in ids:
        writer.record([receipt(message_id, ACCEPTED, sender_id="s"), receipt(message_id, DELIVERED, device_id="d")])
    topic = f"{open_receipts.config.topic_prefix}.receipts"

    def consume() -> list[push_pb2.Receipt]:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=parse_kafka_url(open_receipts.config.queue),
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=1000,
        )
        got: list[push_pb2.Receipt] = []
        try:
            for _ in range(20):
                got += [push_pb2.Receipt.FromString(r.value) for batch in consumer.poll(1000).values() for r in batch]
                if len(got) >= 40:
                    break
        finally:
            consumer.close()
        return got

    got = await asyncio.to_thread(consume)
    assert sorted((r.message_id, r.state) for r in got) == sorted(
        [(m, ACCEPTED) for m in ids] + [(m, DELIVERED) for m in ids]
    ), "exactly one event per state change"
    assert all(r.at_ms > 0 for r in got) and {r.sender_id for r in got if r.state == ACCEPTED} == {"s"}


async def test_close_flushes_the_buffer(open_receipts) -> None:
    writer, reader = open_receipts(flush_seconds=60), open_receipts()
    await writer.start()
    writer.record([receipt("m", ACCEPTED, sender_id="s")])
    assert await reader.status("m", "s") is None, "a 60 s flush interval: not written yet"
    await writer.close()
    assert (await reader.status("m", "s")) is not None, "shutdown flushed it"
