"""Every row of the contract's error table, over real gRPC; the process and other clients carry on."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pushplat_client.v1 import edge_pb2, push_pb2

from pushplat.auth import mint_token
from tests.helpers import RawDevice

SECRET = "test-secret-not-for-production-0123456789"


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def expect_status(awaitable, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    assert info.value.code() == code, info.value.details()
    assert text in info.value.details()


async def still_serving(platform, clients, device_id: str = "bystander") -> None:
    """A connected device still gets a fresh message: the process and other clients carry on."""
    device = platform._bystander
    api = clients("api", addr(platform.ports.api), **platform._api_kwargs)
    sent = await api.send(device_id=device_id, payload=b"still here")
    [message] = await device.read_messages(1)
    assert message.message_id == sent.message_id


@pytest.fixture
async def open_platform(start_platform, clients):
    platform = await start_platform(max_payload_bytes=1024, max_ttl_seconds=3600)
    platform._api_kwargs = {}
    platform._bystander = clients("device", addr(platform.ports.edge))
    await platform._bystander.hello(device_id="bystander")
    return platform


@pytest.fixture
async def secured_platform(start_platform, clients):
    platform = await start_platform(auth_secret=SECRET, api_keys=["key-1", "key-2"])
    platform._api_kwargs = {"api_key": "key-2"}
    platform._bystander = clients("device", addr(platform.ports.edge))
    await platform._bystander.hello(token=mint_token(SECRET, "u-bystander", "bystander"))
    return platform


async def test_send_without_target_is_invalid_argument(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    await expect_status(api.send(payload=b"x"), grpc.StatusCode.INVALID_ARGUMENT, "target is required")
    await expect_status(api.send(user_id="", payload=b"x"), grpc.StatusCode.INVALID_ARGUMENT, "target")
    await still_serving(open_platform, clients)


async def test_oversized_payload_is_invalid_argument(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    await api.send(device_id="bystander", payload=b"x" * 1024)  # exactly the limit is fine
    [_] = await open_platform._bystander.read_messages(1)
    await expect_status(
        api.send(device_id="bystander", payload=b"x" * 1025),
        grpc.StatusCode.INVALID_ARGUMENT,
        "payload is 1025 bytes; the limit is 1024 bytes",
    )
    await still_serving(open_platform, clients)


async def test_default_payload_limit_is_64_kib(platform, clients):
    api = clients("api", addr(platform.ports.api))
    await api.send(device_id="nobody", payload=b"x" * 65536)
    await expect_status(
        api.send(device_id="nobody", payload=b"x" * 65537), grpc.StatusCode.INVALID_ARGUMENT, "limit is 65536 bytes"
    )


async def test_ttl_out_of_range_is_invalid_argument(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    await expect_status(
        api.send(device_id="d", payload=b"x", ttl_seconds=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ttl_seconds must be between 0 and 3600",
    )
    await expect_status(
        api.send(device_id="d", payload=b"x", ttl_seconds=3601), grpc.StatusCode.INVALID_ARGUMENT, "got 3601"
    )
    await still_serving(open_platform, clients)


async def test_batch_with_one_bad_request_names_it_and_enqueues_nothing(open_platform, clients):
    api = clients("api", addr(open_platform.ports.api))
    batch = push_pb2.SendBatchRequest(
        requests=[
            push_pb2.SendRequest(device_id="bystander", payload=b"first"),
            push_pb2.SendRequest(payload=b"no target"),
        ]
    )
    await expect_status(api.stub.SendBatch(batch), grpc.StatusCode.INVALID_ARGUMENT, "requests[1]: a target")
    # Nothing from the failed batch arrives: the next message is the bystander check's own.
    await still_serving(open_platform, clients)
    ok = await api.stub.SendBatch(
        push_pb2.SendBatchRequest(
            requests=[
                push_pb2.SendRequest(device_id="bystander", payload=b"a"),
                push_pb2.SendRequest(device_id="bystander", payload=b"b"),
            ]
        )
    )
    got = await open_platform._bystander.read_messages(2)
    assert [m.message_id for m in got] == [r.message_id for r in ok.responses]


async def test_first_frame_not_hello_is_invalid_argument(open_platform, clients):
    for frame in (
        edge_pb2.ClientFrame(ping=edge_pb2.Ping()),
        edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=["x"])),
        edge_pb2.ClientFrame(),
    ):
        device = clients("device", addr(open_platform.ports.edge))
        await device.call.write(frame)
        await expect_status(device.call.read(), grpc.StatusCode.INVALID_ARGUMENT, "first frame must be Hello")
    await still_serving(open_platform, clients)


async def test_malformed_frame_bytes_are_rejected_without_harm(open_platform, clients):
    channel = grpc.aio.insecure_channel(addr(open_platform.ports.edge))
    connect = channel.stream_stream(
        "/pushplat.v1.Edge/Connect", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    call = connect()
    await call.write(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ClientFrame" in info.value.details()
    await channel.close()
    await still_serving(open_platform, clients)


async def test_valid_token_connects_as_its_subject(secured_platform, clients):
    device = clients("device", addr(secured_platform.ports.edge))
    # With auth on, Hello's own ids are ignored: the token says who this is.
    await device.hello(token=mint_token(SECRET, "carol", "carol-phone"), user_id="mallory", device_id="x")
    api = clients("api", addr(secured_platform.ports.api), api_key="key-1")
    sent = await api.send(user_id="carol", payload=b"for carol")
    [message] = await device.read_messages(1)
    assert message.message_id == sent.message_id


@pytest.mark.parametrize(
    ("token", "text"),
    [
        ("", "token is required"),
        ("not-a-jwt", "invalid token"),
        (mint_token("another-secret-of-at-least-32-bytes", "u", "d"), "invalid token"),
        (mint_token(SECRET, "u", "d", ttl_seconds=-10), "token expired"),
        (jwt.encode({"sub": "u", "device": "d"}, SECRET, algorithm="HS256"), "invalid token"),  # no exp
        (jwt.encode({"sub": "u", "exp": int(time.time()) + 86400}, SECRET, algorithm="HS256"), "'device'"),
    ],
    ids=["missing", "garbage", "wrong-secret", "expired", "no-exp", "no-device"],
)
async def test_bad_or_expired_token_is_unauthenticated(secured_platform, clients, token, text):
    device = RawDevice(addr(secured_platform.ports.edge))
    try:
        await device.call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(token=token, device_id="d")))
        await expect_status(device.call.read(), grpc.StatusCode.UNAUTHENTICATED, text)
    finally:
        await device.close()
    await still_serving(secured_platform, clients)


@pytest.mark.parametrize(
    ("key", "text"),
    [(None, "missing API key"), ("wrong", "unknown API key")],
)
async def test_missing_or_unknown_api_key_is_unauthenticated(secured_platform, clients, key, text):
    api = clients("api", addr(secured_platform.ports.api), api_key=key)
    await expect_status(api.send(device_id="bystander", payload=b"x"), grpc.StatusCode.UNAUTHENTICATED, text)
    raw = clients("api", addr(secured_platform.ports.api))
    await expect_status(
        raw.stub.Send(push_pb2.SendRequest(device_id="d"), metadata=(("authorization", "Basic a"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "expected 'Bearer <key>'",
    )
    await still_serving(secured_platform, clients)


async def test_full_queue_is_unavailable_and_not_accepted(start_platform, clients):
    platform = await start_platform(lane_capacity=2)
    await platform.router.pause()  # nothing drains the lanes, so they fill up
    api = clients("api", addr(platform.ports.api))
    first = [await api.send(device_id="d", payload=b"1"), await api.send(device_id="d", payload=b"2")]
    await expect_status(api.send(device_id="d", payload=b"3"), grpc.StatusCode.UNAVAILABLE, "message not accepted")
    device = clients("device", addr(platform.ports.edge))
    await device.hello(device_id="d")
    platform.router.resume()
    got = await device.read_messages(2)
    assert [m.message_id for m in got] == [r.message_id for r in first]


async def test_every_server_serves_health_and_reflection(platform):
    # The embedded platform has no delivery port (in-process hand-off); a separate edge's
    # delivery port is checked in tests/e2e/test_internal_auth_distributed.py.
    assert platform.ports.delivery == 0
    for port, service in (
        (platform.ports.edge, "pushplat.v1.Edge"),
        (platform.ports.api, "pushplat.v1.Push"),
    ):
        async with grpc.aio.insecure_channel(addr(port)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = set()
            async for response in stream:
                names |= {s.name for s in response.list_services_response.service}
            assert {service, "grpc.health.v1.Health"} <= names


async def test_malformed_frame_after_hello_ends_only_that_stream(open_platform, clients):
    channel = grpc.aio.insecure_channel(addr(open_platform.ports.edge))
    connect = channel.stream_stream(
        "/pushplat.v1.Edge/Connect",
        request_serializer=lambda b: b,
        response_deserializer=edge_pb2.ServerFrame.FromString,
    )
    call = connect()
    await call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(device_id="m")).SerializeToString())
    assert (await call.read()).HasField("welcome")
    await call.write(b"\x0a\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await channel.close()
    await still_serving(open_platform, clients)


async def test_auth_off_is_said_in_one_warning_line_at_startup(start_platform, caplog):
    with caplog.at_level("WARNING", logger="pushplat.server"):
        await start_platform()
    lines = [r.getMessage() for r in caplog.records if "auth" in r.getMessage()]
    assert len(lines) == 1 and "event=auth.off" in lines[0] and "Hello.user_id" in lines[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="pushplat.server"):
        await start_platform(auth_secret=SECRET, api_keys=["k"])
    assert not [r for r in caplog.records if "auth" in r.getMessage()]
