"""PushSender against an in-process Push servicer: request building, auth metadata, errors."""

from __future__ import annotations

import grpc
import pytest
from pushplat_client import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    PRIORITY_UNSPECIFIED,
    AuthError,
    PushError,
    PushSender,
    parse_priority,
    priority_name,
)
from pushplat_client.v1 import message_pb2, push_pb2

from tests.sdk.fakes import FakePush

pytestmark = pytest.mark.asyncio


async def test_send_builds_the_request_and_returns_the_response(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender:
        resp = await sender.send(
            user_id="u1",
            payload="héllo",
            content_type="text/plain",
            priority="high",
            ttl_seconds=60,
            collapse_key="score",
            idempotency_key="k1",
            at_least_once=True,
            labels={"a": "b"},
        )
    assert resp.message_id == "m1"
    assert not resp.duplicate
    (req,) = push_api.requests
    assert req.WhichOneof("target") == "user_id"
    assert req.user_id == "u1"
    assert req.payload == "héllo".encode()
    assert req.content_type == "text/plain"
    assert req.priority == message_pb2.PRIORITY_HIGH
    assert (req.ttl_seconds, req.collapse_key, req.idempotency_key) == (60, "score", "k1")
    assert req.delivery == message_pb2.AT_LEAST_ONCE
    assert dict(req.labels) == {"a": "b"}
    assert "authorization" not in push_api.metadata[0]


async def test_send_to_a_device_with_defaults(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender:
        await sender.send(device_id="d1", payload=b"\x00\x01", priority=message_pb2.PRIORITY_LOW)
    (req,) = push_api.requests
    assert req.WhichOneof("target") == "device_id"
    assert req.payload == b"\x00\x01"
    assert req.priority == message_pb2.PRIORITY_LOW
    assert req.delivery == message_pb2.AT_MOST_ONCE


async def test_api_key_is_sent_as_bearer_metadata(push_api: FakePush) -> None:
    async with PushSender(push_api.address, api_key="secret") as sender:
        await sender.send(user_id="u1", payload=b"x")
        await sender.send_batch([{"user_id": "u2", "payload": b"y"}])
    assert [m.get("authorization") for m in push_api.metadata] == ["Bearer secret", "Bearer secret"]


async def test_send_batch_accepts_dicts_and_requests(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender:
        responses = await sender.send_batch(
            [
                {"user_id": "u1", "payload": "a", "priority": "low"},
                push_pb2.SendRequest(device_id="d2", payload=b"b"),
            ]
        )
    assert [r.message_id for r in responses] == ["m1", "m2"]
    assert [r.WhichOneof("target") for r in push_api.requests] == ["user_id", "device_id"]
    assert push_api.requests[0].priority == message_pb2.PRIORITY_LOW


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, PushError),
        (grpc.StatusCode.UNAUTHENTICATED, AuthError),
        (grpc.StatusCode.UNAVAILABLE, PushError),
    ],
)
async def test_grpc_errors_become_push_errors(
    push_api: FakePush, code: grpc.StatusCode, error_type: type[PushError]
) -> None:
    push_api.fail = (code, "what went wrong", ())
    async with PushSender(push_api.address) as sender:
        with pytest.raises(error_type) as info:
            await sender.send(user_id="u1", payload=b"x")
    assert type(info.value) is error_type
    assert info.value.code == code
    assert info.value.details == "what went wrong"


async def test_rate_limit_carries_the_retry_hint(push_api: FakePush) -> None:
    push_api.fail = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", (("retry-after-ms", "250"),))
    async with PushSender(push_api.address, rate_limit_retries=0) as sender:
        with pytest.raises(PushError) as info:
            await sender.send(user_id="u1", payload=b"x")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.retriable
    assert info.value.retry_after == pytest.approx(0.25)
    assert len(push_api.metadata) == 1, "no retry was asked for"


async def test_rate_limit_retries_are_bounded_by_count_wait_and_deadline(push_api: FakePush) -> None:
    push_api.fail = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", (("retry-after-ms", "20"),))
    async with PushSender(push_api.address, rate_limit_retries=2) as sender:
        with pytest.raises(PushError) as info:
            await sender.send(user_id="u1", payload=b"x")
        assert info.value.retry_after == pytest.approx(0.02) and len(push_api.metadata) == 3, "1 try + 2 retries"
        # A hint longer than the call's timeout is surfaced at once instead of slept through.
        push_api.fail = (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", (("retry-after-ms", "3000"),))
        with pytest.raises(PushError):
            await sender.send(user_id="u1", payload=b"x", timeout=1.0)
        assert len(push_api.metadata) == 4
        # Without a hint, RESOURCE_EXHAUSTED is not the api's rate limit: not retried.
        push_api.fail = (grpc.StatusCode.RESOURCE_EXHAUSTED, "something else", ())
        with pytest.raises(PushError):
            await sender.send(user_id="u1", payload=b"x")
        assert len(push_api.metadata) == 5


async def test_target_is_checked_before_sending(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender:
        with pytest.raises(ValueError):
            await sender.send(payload=b"x")
        with pytest.raises(ValueError):
            await sender.send(user_id="u1", device_id="d1", payload=b"x")
        with pytest.raises(ValueError):
            await sender.send(user_id="u1", payload=b"x", priority="urgent")
    assert push_api.requests == []


async def test_status_and_presence(push_api: FakePush) -> None:
    async with PushSender(push_api.address, api_key="k") as sender:
        status = await sender.get_status("m9")
        presence = await sender.get_presence("u1")
    assert status.message_id == "m9"
    assert status.state == push_pb2.DELIVERY_STATE_ACKED
    assert [d.device_id for d in status.devices] == ["d1"]
    assert presence.user_id == "u1"
    assert [(d.device_id, d.edge_id) for d in presence.devices] == [("d1", "e1")]
    assert all(m.get("authorization") == "Bearer k" for m in push_api.metadata)


async def test_priority_helpers() -> None:
    assert parse_priority("high") == PRIORITY_HIGH
    assert parse_priority("NORMAL") == PRIORITY_NORMAL
    assert parse_priority("PRIORITY_LOW") == PRIORITY_LOW
    assert parse_priority(PRIORITY_HIGH) == PRIORITY_HIGH
    assert parse_priority(0) == PRIORITY_UNSPECIFIED
    for bad in ("urgent", 7, -1, True):
        with pytest.raises(ValueError):
            parse_priority(bad)
    assert [priority_name(p) for p in (1, 2, 3, 0)] == ["low", "normal", "high", "normal"]
