"""Push.SendStream over real gRPC: answers matched by request_id, each bad request answered with
its own error (the README table's status) while the stream carries on, auth and the per-sender
rate limit per request, idempotency as for Send, and a bounded window: the server stops reading
when it is full. On memory and on a real Redis and Redis Cluster (idempotency keys)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client import PushError, PushSender
from pushplat_client.v1 import push_pb2

from pushplat.queue.memory import MemoryLaneProducer
from tests.helpers import eventually

CODE = {c.value[0]: c for c in grpc.StatusCode}


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


def request(request_id: str, **fields: object) -> push_pb2.SendRequest:
    fields.setdefault("payload", b"x")
    return push_pb2.SendRequest(request_id=request_id, **fields)


async def exchange(
    port: int, items: list[bytes | push_pb2.SendRequest], api_key: str = ""
) -> list[push_pb2.SendResponse]:
    """Write every item on one raw SendStream (bytes as they are), then read every answer."""
    async with grpc.aio.insecure_channel(addr(port)) as channel:
        call = channel.stream_stream(
            "/pushplat.v1.Push/SendStream",
            request_serializer=lambda item: item if isinstance(item, bytes) else item.SerializeToString(),
            response_deserializer=push_pb2.SendResponse.FromString,
        )(metadata=(("authorization", f"Bearer {api_key}"),) if api_key else None, timeout=20)
        for item in items:
            await call.write(item)
        await call.done_writing()
        return [response async for response in call]


async def test_many_sends_on_one_stream_reach_the_device(start_platform, clients, registry_url):
    platform = await start_platform(registry=registry_url)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="phone")
    async with PushSender(addr(platform.ports.api)) as sender, sender.stream(window=16) as stream:
        replies = await asyncio.gather(*(stream.send(device_id="phone", payload=f"m{i}") for i in range(200)))
    received = await device.read_messages(200)
    assert sorted(m.message_id for m in received) == sorted(r.message_id for r in replies)
    assert [m.payload for m in received] == [f"m{i}".encode() for i in range(200)], "one sender's order is kept"
    status = await sender_status(platform, replies[0].message_id)
    assert status.message_id == replies[0].message_id


async def sender_status(platform, message_id: str) -> push_pb2.GetStatusResponse:
    async with PushSender(addr(platform.ports.api)) as sender:
        return await sender.get_status(message_id)


async def test_each_bad_request_gets_its_own_error_and_the_stream_carries_on(start_platform, registry_url):
    platform = await start_platform(registry=registry_url, max_payload_bytes=1024)
    first = await exchange(platform.ports.api, [request("key-1", device_id="d", idempotency_key="order-1")])
    items: list[bytes | push_pb2.SendRequest] = [
        request("ok-1", device_id="d"),
        request("no-target"),
        request("big", device_id="d", payload=b"x" * 2000),
        request("ttl", device_id="d", ttl_seconds=-1),
        request("labels", device_id="d", labels={f"k{i}": "v" for i in range(17)}),
        request("", device_id="d"),
        request("x" * 200, device_id="d"),
        request(" \t", device_id="d"),  # only whitespace
        request("x" * 100_000, device_id="d"),  # echoed as "" (never a hostile id whole)
        b"\xff\xff\xff",  # not a SendRequest at all
        request("dup", device_id="d", idempotency_key="order-1"),  # the same request again
        request("reused", device_id="other", idempotency_key="order-1"),  # the key, another request
        request("ok-2", user_id="u"),
    ]
    raw = await exchange(platform.ports.api, items)
    # Every item is answered once; the empty id and the undecodable item both answer with "".
    assert len(raw) == len(items) and sum(a.request_id == "" for a in raw) == 3, raw
    answers = {a.request_id: a for a in raw}
    refused = {rid: CODE[a.error.code] for rid, a in answers.items() if a.error.code}
    assert refused == {
        "no-target": grpc.StatusCode.INVALID_ARGUMENT,
        "big": grpc.StatusCode.INVALID_ARGUMENT,
        "ttl": grpc.StatusCode.INVALID_ARGUMENT,
        "labels": grpc.StatusCode.INVALID_ARGUMENT,
        "": grpc.StatusCode.INVALID_ARGUMENT,  # the empty id, the 100,000-byte one, the undecodable item
        "x" * 200: grpc.StatusCode.INVALID_ARGUMENT,
        " \t": grpc.StatusCode.INVALID_ARGUMENT,
        "reused": grpc.StatusCode.ALREADY_EXISTS,
    }
    assert "target is required" in answers["no-target"].error.message
    assert "payload is 2000 bytes" in answers["big"].error.message
    assert "request_id is required" in answers["x" * 200].error.message
    assert "only whitespace" in answers[" \t"].error.message
    assert all(not answers[rid].message_id for rid in refused), "a refused request has no message id"
    assert answers["ok-1"].message_id and answers["ok-2"].message_id and not answers["ok-1"].duplicate
    assert (answers["dup"].message_id, answers["dup"].duplicate) == (first[0].message_id, True)
    assert len(await exchange(platform.ports.api, [b"\xff"])) == 1, "a bad item alone is answered too"


async def test_the_api_key_guards_the_stream_and_the_rate_limit_each_request(start_platform):
    platform = await start_platform(api_keys=["billing:bill-key"], send_rate=5, send_burst=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await exchange(platform.ports.api, [request("a", device_id="d")], api_key="wrong")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = await exchange(platform.ports.api, [request(str(i), device_id="d") for i in range(8)], "bill-key")
    limited = [a for a in answers if a.error.code]
    assert len(answers) == 8 and len(limited) == 3, "a burst of 5, then RESOURCE_EXHAUSTED per request"
    assert all(CODE[a.error.code] == grpc.StatusCode.RESOURCE_EXHAUSTED and a.error.retry_after_ms > 0 for a in limited)
    async with PushSender(addr(platform.ports.api), api_key="bill-key", max_retry_wait=2.0) as sender:
        async with sender.stream() as stream:
            reply = await stream.send(device_id="d", payload="waits for its token", timeout=10)
    assert reply.message_id, "the SDK waits for the hint and retries"


class HeldProducer(MemoryLaneProducer):
    """The real in-process lane, with publishes held until released: a slow queue."""

    def __init__(self, inner: MemoryLaneProducer) -> None:
        super().__init__(inner._lanes)
        self.release = asyncio.Event()
        self.largest = 0

    async def publish_many(self, lane, envelopes):
        self.largest = max(self.largest, len(envelopes))
        await self.release.wait()
        return await super().publish_many(lane, envelopes)


async def test_a_full_window_stops_the_server_reading(start_platform):
    platform = await start_platform(send_stream_window=5)
    servicer = platform.api_servicer
    held = HeldProducer(servicer.producer)
    servicer.producer = held
    full_before = REGISTRY.get_sample_value("pushplat_send_stream_window_full_total") or 0.0
    task = asyncio.create_task(exchange(platform.ports.api, [request(str(i), device_id="d") for i in range(60)]))

    def window_full() -> bool:
        return (REGISTRY.get_sample_value("pushplat_send_stream_window_full_total") or 0.0) > full_before

    await eventually(window_full, timeout=10, what="the server to stop reading at its window")
    held.release.set()
    answers = await task
    assert sorted(int(a.request_id) for a in answers) == list(range(60)) and all(a.message_id for a in answers)
    assert held.largest <= 5, "never more than the window read ahead of its answers"


async def test_send_batch_is_one_publish_per_lane(start_platform):
    platform = await start_platform()
    servicer = platform.api_servicer
    calls: list[tuple[str, int]] = []
    publish_many = servicer.producer.publish_many

    async def counting(lane, envelopes):
        calls.append((lane, len(envelopes)))
        return await publish_many(lane, envelopes)

    servicer.producer.publish_many = counting
    async with PushSender(addr(platform.ports.api)) as sender:
        batch = [
            {"device_id": f"d{i}", "payload": "x", "priority": ("high", "normal", "low")[i % 3]} for i in range(300)
        ]
        replies = await sender.send_batch(batch)
        assert len({r.message_id for r in replies}) == 300
        assert sorted(calls) == [("high", 100), ("low", 100), ("normal", 100)]
        with pytest.raises(PushError):  # still all or nothing: one bad request, nothing published
            await sender.send_batch([push_pb2.SendRequest(device_id="d"), push_pb2.SendRequest(payload=b"no target")])
    assert len(calls) == 3
