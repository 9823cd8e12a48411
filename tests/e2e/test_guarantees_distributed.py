"""Delivery guarantees on Redis and Kafka, through separate api/router/edge processes."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from kafka import KafkaConsumer
from pushplat_client import Backoff, PushClient, PushSender
from pushplat_client.v1 import edge_pb2, push_pb2

from tests.helpers import Inbox, RawDevice, eventually

pytestmark = [pytest.mark.redis, pytest.mark.kafka]
State = push_pb2.DeliveryState


def receipts_on_kafka(kafka_url: str, topic: str, message_id: str, timeout: float = 30) -> list[push_pb2.Receipt]:
    """Every receipt for message_id on the receipts topic (blocking; run it in a thread)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_url.removeprefix("kafka://").split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    found: list[push_pb2.Receipt] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for record in consumer:
                receipt = push_pb2.Receipt.FromString(record.value)
                if receipt.message_id == message_id:
                    found.append(receipt)
            if {r.state for r in found} >= {
                State.DELIVERY_STATE_ACCEPTED,
                State.DELIVERY_STATE_DELIVERED_TO_EDGE,
                State.DELIVERY_STATE_ACKED,
            }:
                break
    finally:
        consumer.close()
    return found


async def test_receipts_reach_kafka_and_status_reads_them_from_redis(deployment):
    api, _, (edge,) = await deployment.platform(routers=1, edges=1)
    inbox = Inbox()
    client = PushClient(edge.address, user_id="ada", device_id="ada-1")
    try:
        await inbox.connect("ada-1", client, timeout=15)
        async with PushSender(api.address) as sender:
            sent = await sender.send(user_id="ada", payload="hi", at_least_once=True, labels={"variant": "A"})
            await eventually(lambda: inbox.seen["ada-1"] == ["hi"], 30, what="the message")

            async def acked() -> bool:
                status = await sender.get_status(sent.message_id)
                return any(d.device_id == "ada-1" and d.state == State.DELIVERY_STATE_ACKED for d in status.devices)

            await eventually(acked, 30, what="the ack in GetStatus")
            status = await sender.get_status(sent.message_id)
            assert dict(status.labels) == {"variant": "A"}
            assert status.devices[0].edge_id == deployment.edge_id("edge0")
        events = await asyncio.to_thread(
            receipts_on_kafka, deployment.kafka_url, f"{deployment.prefix}.receipts", sent.message_id
        )
        states = {r.state for r in events}
        assert {
            State.DELIVERY_STATE_ACCEPTED,
            State.DELIVERY_STATE_DELIVERED_TO_EDGE,
            State.DELIVERY_STATE_ACKED,
        } <= states
        assert all(dict(r.labels) == {"variant": "A"} for r in events)
    finally:
        await inbox.close()
        await client.close()


async def test_idempotency_holds_across_two_api_processes(deployment):
    first_api, second_api = await deployment.api(), await deployment.api()
    await deployment.router()
    edge = await deployment.edge()
    inbox = Inbox()
    client = PushClient(edge.address, user_id="u", device_id="d")
    try:
        await inbox.connect("d", client, timeout=15)
        async with PushSender(first_api.address) as one, PushSender(second_api.address) as two:
            first = await one.send(device_id="d", payload="once", idempotency_key="order-7")
            again = await two.send(device_id="d", payload="once", idempotency_key="order-7")
            assert again.duplicate and again.message_id == first.message_id and not first.duplicate
            marker = await two.send(device_id="d", payload="marker")
        await eventually(lambda: "marker" in inbox.seen["d"], 30, what="the marker")
        assert inbox.seen["d"] == ["once", "marker"]
        assert marker.message_id != first.message_id
    finally:
        await inbox.close()
        await client.close()


async def test_offline_inbox_collapse_and_ttl_on_redis(deployment):
    api, _, (edge,) = await deployment.platform(routers=1, edges=1)
    async with PushSender(api.address) as sender:
        scores = [
            await sender.send(device_id="fan", payload=score, at_least_once=True, collapse_key="score")
            for score in ("1-0", "2-0", "2-1")
        ]
        short = await sender.send(device_id="fan", payload="short-lived", at_least_once=True, ttl_seconds=1)

        async def stored() -> bool:  # the router has put everything in the inbox
            return (await sender.get_status(short.message_id)).state == State.DELIVERY_STATE_NO_ROUTE

        await eventually(stored, 30, what="the messages to reach the inbox")
        replaced = await sender.get_status(scores[1].message_id)
        assert [(d.device_id, d.state, d.detail) for d in replaced.devices] == [
            ("fan", State.DELIVERY_STATE_DROPPED, f"collapsed by {scores[2].message_id}")
        ]
        expiry = time.time() + 1.1
        await eventually(lambda: time.time() > expiry, 5, what="the short TTL to run out")
        await sender.send(device_id="fan", payload="news", at_least_once=True)
    inbox = Inbox()
    client = PushClient(edge.address, user_id="fan", device_id="fan")
    try:
        await inbox.connect("fan", client, timeout=15)
        await eventually(lambda: "news" in inbox.seen["fan"], 30, what="the replay")
        assert inbox.seen["fan"] == ["2-1", "news"]
    finally:
        await inbox.close()
        await client.close()


async def test_a_connection_on_another_edge_replaces_the_old_one(deployment):
    api, _, (edge_a, edge_b) = await deployment.platform(routers=1, edges=2)
    old = RawDevice(edge_a.address)
    new = PushClient(edge_b.address, user_id="u", device_id="tv", backoff=Backoff(base=0.05, cap=0.5))
    inbox = Inbox()
    try:
        await old.hello(user_id="u", device_id="tv")
        await inbox.connect("tv", new, timeout=15)

        async def go_away() -> edge_pb2.GoAway:
            while True:
                frame = await old.call.read()
                assert frame is not grpc.aio.EOF, "the old stream ended without a GoAway"
                if frame.HasField("go_away"):
                    return frame.go_away

        goaway = await asyncio.wait_for(go_away(), 30)
        assert goaway.reason == edge_pb2.GoAway.REPLACED and deployment.edge_id("edge1") in goaway.detail
        async with PushSender(api.address) as sender:
            await sender.send(device_id="tv", payload="to the new stream")
            presence = await sender.get_presence("u")
        assert [(d.device_id, d.edge_id) for d in presence.devices] == [("tv", deployment.edge_id("edge1"))]
        await eventually(lambda: inbox.seen["tv"] == ["to the new stream"], 30, what="the message on edge B")
    finally:
        await inbox.close()
        await new.close()
        await old.close()
