"""Senders are kept apart, over real gRPC: idempotency keys and message status belong to the
sender (the API key's identity), a key reused for another request is refused, and each sender
has its own rate limit. Runs on memory and on a real Redis and Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client import PushError, PushSender
from pushplat_client.v1 import push_pb2

from pushplat.auth import key_fingerprint

# billing rotates its key: two keys, one sender. "solo-key" is a sender of its own.
KEYS = ["billing:bill-key-old", "billing:bill-key-new", "solo-key"]


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def expect(awaitable, code: grpc.StatusCode, *texts: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value.details()
    for text in texts:
        assert text in info.value.details(), info.value.details()
    return info.value


def limit_hits(limit: str) -> float:
    return REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": limit}) or 0.0


async def test_the_issue_reproduced_with_two_plain_keys(start_platform, clients, registry_url):
    """Sender B reuses sender A's idempotency key for another target: B's message is queued
    (not A's id back with duplicate = true), and B cannot read A's status."""
    platform = await start_platform(api_keys=["key-a", "key-b"], registry=registry_url)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="b-user", device_id="b-device")
    a = clients("api", addr(platform.ports.api), api_key="key-a")
    b = clients("api", addr(platform.ports.api), api_key="key-b")
    sent_a = await a.send(device_id="a-device", payload=b"A's", idempotency_key="order-7")
    sent_b = await b.send(device_id="b-device", payload=b"B's", idempotency_key="order-7")
    assert not sent_b.duplicate and sent_b.message_id != sent_a.message_id
    [message] = await device.read_messages(1)
    assert (message.message_id, message.payload) == (sent_b.message_id, b"B's")
    await expect(
        b.stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent_a.message_id), metadata=b.metadata, timeout=5),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_idempotency_keys_and_status_belong_to_the_sender(start_platform, clients, registry_url):
    platform = await start_platform(api_keys=KEYS, registry=registry_url)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    billing = clients("api", addr(platform.ports.api), api_key="bill-key-old")
    billing_rotated = clients("api", addr(platform.ports.api), api_key="bill-key-new")
    solo = clients("api", addr(platform.ports.api), api_key="solo-key")

    first = await billing.send(device_id="d", payload=b"from billing", idempotency_key="order-1")
    # Another sender's "order-1" is its own key: queued and delivered, not a duplicate of billing's.
    other = await solo.send(device_id="d", payload=b"from solo", idempotency_key="order-1")
    assert not other.duplicate and other.message_id != first.message_id
    got = await device.read_messages(2)
    assert [(m.message_id, m.payload) for m in got] == [
        (first.message_id, b"from billing"),
        (other.message_id, b"from solo"),
    ]

    # A retry of the very same request, even with the sender's rotated key, is the duplicate.
    again = await billing_rotated.send(device_id="d", payload=b"from billing", idempotency_key="order-1")
    assert again.duplicate and again.message_id == first.message_id
    # The same key on another request (payload, target, or options) is refused, and says why.
    reused = limit_hits("idempotency_key_reused")
    for changed in (
        {"device_id": "d", "payload": b"a different payload"},
        {"device_id": "another-device", "payload": b"from billing"},
        {"user_id": "d", "payload": b"from billing"},
        {"device_id": "d", "payload": b"from billing", "ttl_seconds": 60},
    ):
        await expect(
            billing.send(idempotency_key="order-1", **changed),
            grpc.StatusCode.ALREADY_EXISTS,
            "'order-1' was already used for a different request",
        )
    assert limit_hits("idempotency_key_reused") == reused + 4

    # Status: only the sender reads it; to anyone else the message does not exist.
    status = await billing_rotated.stub.GetStatus(
        push_pb2.GetStatusRequest(message_id=first.message_id), metadata=billing_rotated.metadata, timeout=5
    )
    assert status.message_id == first.message_id
    await expect(
        solo.stub.GetStatus(push_pb2.GetStatusRequest(message_id=first.message_id), metadata=solo.metadata, timeout=5),
        grpc.StatusCode.NOT_FOUND,
        f"no status for message {first.message_id}",
    )
    await solo.stub.GetStatus(push_pb2.GetStatusRequest(message_id=other.message_id), metadata=solo.metadata, timeout=5)

    # Nothing else reached the device: the next message is a fresh marker.
    marker = await solo.send(device_id="d", payload=b"marker")
    [next_message] = await device.read_messages(1)
    assert next_message.message_id == marker.message_id


async def test_a_batch_with_a_reused_key_enqueues_nothing_and_keeps_no_claims(start_platform, clients, registry_url):
    platform = await start_platform(api_keys=KEYS, registry=registry_url)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    api = clients("api", addr(platform.ports.api), api_key="solo-key")
    held = await api.send(device_id="d", payload=b"held", idempotency_key="k-held")
    [_] = await device.read_messages(1)
    batch = push_pb2.SendBatchRequest(
        requests=[
            push_pb2.SendRequest(device_id="d", payload=b"new", idempotency_key="k-new"),
            push_pb2.SendRequest(device_id="d", payload=b"changed", idempotency_key="k-held"),
        ]
    )
    await expect(
        api.stub.SendBatch(batch, metadata=api.metadata, timeout=5),
        grpc.StatusCode.ALREADY_EXISTS,
        "requests[1]: idempotency_key 'k-held'",
    )
    # k-new was released with the failed batch: sending it now is a first send, not a duplicate.
    fresh = await api.send(device_id="d", payload=b"new", idempotency_key="k-new")
    assert not fresh.duplicate
    [message] = await device.read_messages(1)
    assert message.message_id == fresh.message_id and message.payload == b"new"
    repeat = await api.stub.SendBatch(
        push_pb2.SendBatchRequest(
            requests=[push_pb2.SendRequest(device_id="d", payload=b"held", idempotency_key="k-held")]
        ),
        metadata=api.metadata,
        timeout=5,
    )
    assert [(r.message_id, r.duplicate) for r in repeat.responses] == [(held.message_id, True)]


async def test_named_keys_are_one_sender_and_bare_keys_are_identified_by_fingerprint(start_platform, clients):
    platform = await start_platform(api_keys=KEYS)
    api = clients("api", addr(platform.ports.api), api_key="solo-key")
    sent = await api.send(device_id="offline", payload=b"x")
    event = next(e for e in platform.receipts.events if e.message_id == sent.message_id)
    # Receipts name the sender by its identity, never by the key itself.
    assert event.sender_id == key_fingerprint("solo-key") and "solo-key" not in event.sender_id
    billing = clients("api", addr(platform.ports.api), api_key="bill-key-new")
    sent = await billing.send(device_id="offline", payload=b"x")
    assert next(e for e in platform.receipts.events if e.message_id == sent.message_id).sender_id == "billing"


async def test_each_sender_has_its_own_rate_limit_with_a_retry_hint(start_platform, clients):
    platform = await start_platform(api_keys=KEYS, send_rate=5, send_burst=5)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    billing = clients("api", addr(platform.ports.api), api_key="bill-key-old")
    billing_rotated = clients("api", addr(platform.ports.api), api_key="bill-key-new")
    solo = clients("api", addr(platform.ports.api), api_key="solo-key")
    hits = limit_hits("send_rate")

    for i in range(3):
        await billing.send(device_id="d", payload=f"b{i}".encode())
    # A batch counts each of its messages: 2 more fit in the burst of 5, a third does not.
    two = push_pb2.SendBatchRequest(requests=[push_pb2.SendRequest(device_id="d", payload=b"x")] * 2)
    await billing.stub.SendBatch(two, metadata=billing.metadata, timeout=5)
    # The rotated key is the same sender: its bucket is empty too.
    error = await expect(
        billing_rotated.send(device_id="d", payload=b"over"), grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit of 5"
    )
    hint = int(dict(error.trailing_metadata())["retry-after-ms"])
    assert 1 <= hint <= 200, "one token at 5/s is at most 200 ms away"
    assert limit_hits("send_rate") == hits + 1
    # Another sender is untouched.
    for i in range(5):
        await solo.send(device_id="d", payload=f"s{i}".encode())
    # A batch that can never fit in the burst is a request to fix, not a wait.
    six = push_pb2.SendBatchRequest(requests=[push_pb2.SendRequest(device_id="d", payload=b"x")] * 6)
    await expect(
        billing.stub.SendBatch(six, metadata=billing.metadata, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "more than this sender's burst of 5",
    )
    # After the hint, billing may send again; nothing refused was ever delivered.
    await asyncio.sleep(hint / 1000)  # the wait the server asked for
    after = await billing.send(device_id="d", payload=b"after the wait")
    got = await device.read_messages(11)
    assert [m.payload for m in got][-1] == b"after the wait" and got[-1].message_id == after.message_id
    assert b"over" not in [m.payload for m in got]


async def test_push_sender_honours_the_retry_hint(start_platform, clients):
    platform = await start_platform(api_keys=KEYS, send_rate=10, send_burst=2)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    async with PushSender(addr(platform.ports.api), api_key="solo-key") as sender:
        started = time.monotonic()
        sent = [await sender.send(device_id="d", payload=f"m{i}") for i in range(6)]
        took = time.monotonic() - started
    # 2 at once, then 4 more at 10/s: the sender waited for the hints instead of failing.
    assert took >= 0.3, f"6 sends at 10/s with a burst of 2 took only {took:.2f}s"
    got = await device.read_messages(6)
    assert [m.message_id for m in got] == [r.message_id for r in sent]
    # Without retries the hint is surfaced: billing (another sender, so a full bucket) sends 3.
    async with PushSender(addr(platform.ports.api), api_key="bill-key-old", rate_limit_retries=0) as impatient:
        await impatient.send(device_id="d", payload="a")
        await impatient.send(device_id="d", payload="b")
        with pytest.raises(PushError) as info:
            await impatient.send(device_id="d", payload="c")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and 0 < info.value.retry_after <= 0.1
