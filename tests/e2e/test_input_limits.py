"""Limits on what a client may send, over real gRPC: each ends that one call with
INVALID_ARGUMENT and a message that says what to fix, is counted in pushplat_limits_hit_total,
and leaves the process and every other client alone."""

from __future__ import annotations

import base64
import logging

import grpc
import jwt
import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import edge_pb2, push_pb2

from pushplat import limits
from pushplat.auth import mint_token
from tests.helpers import RawDevice

SECRET = "limits-tests-secret-0123456789abcdef0123"
MEGABYTE_ID = "x" * (1 << 20)
# Empty ids have their own answers: "a target is required", "Hello.device_id is required", and
# for tokens "token claim 'sub' is empty" (below).
BAD_IDS = [
    ("   \t", "is only whitespace"),
    ("a" * 129, "is 129 bytes; the limit is 128 bytes"),
    ("é" * 65, "is 130 bytes; the limit is 128 bytes"),
    ("line\nbreak", "contains a non-printable character (U+000A at offset 4)"),
    ("nul\x00", "contains a non-printable character (U+0000 at offset 3)"),
    (MEGABYTE_ID, "is 1048576 bytes; the limit is 128 bytes"),
]


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


def hits(limit: str) -> float:
    return REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": limit}) or 0.0


async def expect(awaitable, code: grpc.StatusCode, *texts: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    details = info.value.details()
    assert info.value.code() == code, details
    for text in texts:
        assert text in details, details
    assert len(details) < 1_000, "an error message never echoes a hostile value whole"
    return details


async def hello_refusal(address: str, hello: edge_pb2.Hello) -> tuple[grpc.StatusCode, str]:
    device = RawDevice(address)
    try:
        await device.call.write(edge_pb2.ClientFrame(hello=hello))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await device.call.read()
        return info.value.code(), info.value.details()
    finally:
        await device.close()


@pytest.fixture
async def open_platform(start_platform, clients):
    platform = await start_platform()
    platform.bystander = clients("device", addr(platform.ports.edge))
    await platform.bystander.hello(user_id="by", device_id="bystander")
    return platform


async def still_serving(platform, clients) -> None:
    api = clients("api", addr(platform.ports.api))
    sent = await api.send(device_id="bystander", payload=b"still here")
    [message] = await platform.bystander.read_messages(1)
    assert message.message_id == sent.message_id


@pytest.mark.parametrize(("bad", "text"), BAD_IDS, ids=["blank", "long", "long-utf8", "newline", "nul", "1mb"])
async def test_bad_ids_in_hello_and_send_are_invalid_argument(open_platform, clients, caplog, bad, text):
    before = hits("id")
    edge = addr(open_platform.ports.edge)
    for hello, field in (
        (edge_pb2.Hello(user_id="u", device_id=bad), "Hello.device_id"),
        (edge_pb2.Hello(user_id=bad, device_id="ok"), "Hello.user_id"),
    ):
        code, details = await hello_refusal(edge, hello)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert f"{field} {text}" in details and len(details) < 1_000, details
    api = clients("api", addr(open_platform.ports.api))
    for target in ("user_id", "device_id"):
        await expect(api.send(payload=b"x", **{target: bad}), grpc.StatusCode.INVALID_ARGUMENT, f"{target} {text}")
    await expect(
        api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id=bad), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"user_id {text}",
    )
    await expect(
        api.stub.GetStatus(push_pb2.GetStatusRequest(message_id=bad), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"message_id {text}",
    )
    assert hits("id") == before + 6
    assert all(len(r.getMessage()) < 4_000 for r in caplog.records), "a 1 MB id must never be logged whole"
    await still_serving(open_platform, clients)


async def test_bad_ids_in_tokens_and_token_errors_say_what_is_wrong(start_platform, clients):
    platform = await start_platform(auth_secret=SECRET)
    bystander = clients("device", addr(platform.ports.edge))
    await bystander.hello(token=mint_token(SECRET, "by", "bystander"))
    edge = addr(platform.ports.edge)
    for user, device, text in (
        ("", "d", "token claim 'sub' is empty"),
        ("u", "   ", "token claim 'device' is only whitespace"),
        ("u" * 200, "d", "token claim 'sub' is 200 bytes; the limit is 128 bytes"),
        ("u", "tab\there", "token claim 'device' contains a non-printable character"),
    ):
        code, details = await hello_refusal(edge, edge_pb2.Hello(token=mint_token(SECRET, user, device)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and text in details, details
    # A token far larger than any JWT of ours is refused before it is parsed.
    huge = mint_token(SECRET, "u", "x" * 9000)
    code, details = await hello_refusal(edge, edge_pb2.Hello(token=huge))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "the limit is 8192 bytes" in details, details
    # Broken tokens get a fixed reason, never a decoder's internals.
    garbage_header = base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode().rstrip("=") + ".e30.c2ln"
    for token, text in (
        (garbage_header, "not a well-formed HS256 JWT"),
        ("a.b.c", "not a well-formed HS256 JWT"),
        (
            jwt.encode({"sub": "u", "device": "d", "exp": 9999999999}, "another-secret-0123456789abcdef0123456"),
            "signature does not match",
        ),
        (jwt.encode({"sub": "u", "device": "d"}, SECRET), "missing required claim 'exp'"),
        (jwt.encode({"sub": "u", "device": "d", "exp": 9999999999}, "k" * 64, algorithm="HS512"), "only HS256"),
        (jwt.encode({"sub": "u", "device": "d", "exp": 9999999999, "nbf": 9999999990}, SECRET), "not valid yet"),
    ):
        code, details = await hello_refusal(edge, edge_pb2.Hello(token=token))
        assert code == grpc.StatusCode.UNAUTHENTICATED and text in details, details
        for leak in ("codec", "utf-8", "Traceback", "Error", "Invalid header"):
            assert leak not in details, details
    api = clients("api", addr(platform.ports.api))
    sent = await api.send(device_id="bystander", payload=b"still here")
    [message] = await bystander.read_messages(1)
    assert message.message_id == sent.message_id


async def test_labels_and_short_fields_are_bounded(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    before = hits("labels"), hits("key_bytes")
    ok = {f"k{i}": "v" * limits.MAX_LABEL_VALUE_BYTES for i in range(limits.MAX_LABELS)}
    await api.send(device_id="bystander", payload=b"at the limits", labels=ok, idempotency_key="i" * 256)
    [message] = await open_platform.bystander.read_messages(1)
    assert dict(message.labels) == ok
    for labels, text in (
        ({**ok, "one-more": "v"}, "17 labels; the limit is 16"),
        ({"k" * 65: "v"}, "is 65 bytes; the limit is 64 bytes"),
        ({"variant": "v" * 257}, "label 'variant' has a value of 257 bytes; the limit is 256 bytes"),
        ({"": "v"}, "a label key is empty"),
    ):
        await expect(
            api.send(device_id="bystander", payload=b"x", labels=labels), grpc.StatusCode.INVALID_ARGUMENT, text
        )
    for field in ("idempotency_key", "collapse_key", "content_type"):
        await expect(
            api.send(device_id="bystander", payload=b"x", **{field: "k" * 257}),
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field} is 257 bytes; the limit is 256 bytes",
        )
    assert hits("labels") == before[0] + 4 and hits("key_bytes") == before[1] + 3
    await still_serving(open_platform, clients)


async def test_send_batch_takes_at_most_500_requests(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    before = hits("send_batch")
    item = push_pb2.SendRequest(device_id="nobody", payload=b"x")
    full = await api.stub.SendBatch(push_pb2.SendBatchRequest(requests=[item] * 500), timeout=30)
    assert len(full.responses) == 500
    await expect(
        api.stub.SendBatch(push_pb2.SendBatchRequest(requests=[item] * 501), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SendBatch carries 501 requests; the limit is 500",
    )
    await expect(
        api.stub.SendBatch(push_pb2.SendBatchRequest(requests=[item] * 100_000), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "carries 100000 requests",
    )
    assert hits("send_batch") == before + 2
    await still_serving(open_platform, clients)


async def test_an_ack_frame_over_the_limit_ends_only_that_stream(open_platform, clients):
    before = hits("ack_ids")
    device = clients("device", addr(open_platform.ports.edge))
    await device.hello(user_id="u", device_id="greedy")
    fine = [f"id-{i}" for i in range(limits.MAX_ACK_IDS)]
    await device.call.write(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=fine)))
    await device.call.write(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[*fine, "one-too-many"])))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while await device.call.read() is not grpc.aio.EOF:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "an Ack carries 1001 message ids; the limit is 1000 per frame" in info.value.details()
    assert hits("ack_ids") == before + 1
    await still_serving(open_platform, clients)
    # The edge forgot the stream it ended.
    assert open_platform.edge.hub.get("greedy") is None


async def test_hostile_values_are_clipped_in_logs(open_platform, clients, caplog):
    with caplog.at_level(logging.INFO, logger="pushplat"):
        await hello_refusal(addr(open_platform.ports.edge), edge_pb2.Hello(user_id="u", device_id=MEGABYTE_ID))
        await hello_refusal(addr(open_platform.ports.edge), edge_pb2.Hello(user_id="evil\nevent=forged", device_id="d"))
        device = clients("device", addr(open_platform.ports.edge))
        await device.call.write(
            edge_pb2.ClientFrame(hello=edge_pb2.Hello(user_id="u", device_id="fine", client_version="v" * 100_000))
        )
        assert (await device.call.read()).HasField("welcome")
        await still_serving(open_platform, clients)  # by now the session.open line is written
    lines = [r.getMessage() for r in caplog.records]
    # Refusals of one kind are logged at most 10 times a second, so the second may be held back.
    assert sum("event=session.refused" in line for line in lines) >= 1, lines
    assert any("event=session.open" in line and "device=fine" in line for line in lines), lines
    assert all(len(line) < 4_000 and "\n" not in line for line in lines), "clipped, one line per event"
