"""Hostile and careless clients against a real `pushplat dev` process, each attack from its own
connections: the attacker gets a clear answer (or a bounded, counted refusal), and a bystander
device on the same edge keeps getting its messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pushplat_client.v1 import edge_pb2, push_pb2

from pushplat.auth import mint_token
from pushplat.health import MAX_HEALTH_WATCHES
from pushplat.reflection import MAX_REFLECTION_STREAMS
from tests.helpers import Api, RawDevice, eventually, free_port
from tests.processes import DevServer, ProcessGroup, scrape

SECRET = "hostile-secret-0123456789abcdef01234567"


@dataclass
class Platform:
    dev: DevServer
    bystander: RawDevice
    api: Api

    async def still_serving(self) -> None:
        """The process is up and the bystander gets a fresh message: other clients carry on."""
        assert self.dev.running, self.dev.log_tail()
        sent = await self.api.send(device_id="bystander", payload=b"still here")
        [message] = await self.bystander.read_messages(1)
        assert message.message_id == sent.message_id


async def start(processes: ProcessGroup, *args: str) -> AsyncIterator[Platform]:
    dev = await processes.dev("--ws-port", "0", "--log-level", "info", *args)
    bystander = RawDevice(dev.edge)
    if "--auth-secret" in args:
        await bystander.hello(token=mint_token(SECRET, "u-bystander", "bystander"))
    else:
        await bystander.hello(device_id="bystander")
    api = Api(dev.api)
    try:
        yield Platform(dev, bystander, api)
    finally:
        await bystander.close()
        await api.close()


@pytest.fixture
async def platform(processes: ProcessGroup) -> AsyncIterator[Platform]:
    async for platform in start(processes):
        yield platform


def subscribe(request_id: str, topics: list[str]) -> edge_pb2.ClientFrame:
    return edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=topics, request_id=request_id))


async def test_every_subscribe_frame_is_answered_when_the_device_reads_slower_than_it_writes(platform):
    """A device that pipelines Subscribe frames and reads its answers a little more slowly (an app
    busy with its messages) gets exactly one SubscriptionResult per frame: the edge stops reading
    that stream while answers wait, instead of dropping answers the device then waits for forever."""
    device = RawDevice(platform.dev.edge)
    try:
        await device.hello(device_id="pipeliner")
        frames = 1000
        answered: list[str] = []

        async def read_slowly() -> None:
            while len(answered) < frames:
                frame = await device.call.read()
                assert frame is not grpc.aio.EOF and frame.HasField("subscription"), frame
                answered.append(frame.subscription.request_id)
                await asyncio.sleep(0.001)  # the device's own pace, not a wait for a condition

        reader = asyncio.create_task(read_slowly())
        # 100 topics a frame: over --topic-changes-per-second, so each answer carries 100
        # refusals with their messages, and the edge's writes outpace the device's reads.
        for i in range(frames):
            await device.call.write(subscribe(f"r{i}", [f"t{i}-{j}" for j in range(100)]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 30)  # re-raises what the reader saw; cancels it on timeout
        assert len(answered) == frames, f"{frames - len(answered)} of {frames} Subscribe frames got no answer"
        assert sorted(answered) == sorted(f"r{i}" for i in range(frames))
    finally:
        await device.close()
    await platform.still_serving()


def signed(claims: dict, headers: dict | None = None) -> str:
    """An HS256 JWT of exactly these claims (jwt.encode checks some claim types itself)."""
    return jwt.api_jws.encode(json.dumps(claims).encode(), SECRET, algorithm="HS256", headers=headers)


@pytest.mark.parametrize(
    ("claims", "headers", "text"),
    [
        ({"sub": 123, "device": "d"}, None, "needs string claims 'sub' and 'device'"),
        ({"sub": "u", "device": "d", "exp": "tomorrow"}, None, "'exp' must be a number"),
        ({"sub": "u", "device": "d", "nbf": "now"}, None, "'nbf' must be a number"),
        ({"sub": "u", "device": "d", "aud": "another-service"}, None, "'aud'"),
        ({"sub": "u", "device": "d", "jti": 7}, None, "'jti' must be a string"),
        ({"sub": "u", "device": "d"}, {"crit": ["x-custom"]}, "HS256 JWT with string claims 'sub' and 'device'"),
    ],
    ids=["sub-not-a-string", "exp-not-a-number", "nbf-not-a-number", "audience", "jti-not-a-string", "crit-header"],
)
async def test_a_signed_token_the_edge_refuses_says_what_to_change(processes, claims, headers, text):
    """Tokens signed with the right secret but shaped unlike ours (as another issuer's library
    may mint them) are UNAUTHENTICATED with a reason that names the claim to fix."""
    async for platform in start(processes, "--auth-secret", SECRET):
        claims = {"exp": int(time.time()) + 3600, **claims}
        device = RawDevice(platform.dev.edge)
        try:
            await device.call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(token=signed(claims, headers))))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await device.call.read()
        finally:
            await device.close()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert text in info.value.details(), info.value.details()
        await platform.still_serving()


async def test_health_watch_streams_are_capped_and_unknown_services_are_named(platform):
    """Health.Watch streams stay open for good and need no credentials, so each port holds at most
    MAX_HEALTH_WATCHES of them (21 KiB each, measured); one more is RESOURCE_EXHAUSTED with what
    to do instead, Check keeps answering, and a closed watch frees its place."""
    async with grpc.aio.insecure_channel(platform.dev.edge) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_HEALTH_WATCHES)]
        try:
            first = await asyncio.gather(*(watch.read() for watch in watches))
            assert {reply.status for reply in first} == {health_pb2.HealthCheckResponse.SERVING}
            extra = health.Watch(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await extra.read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Health.Watch streams are open" in info.value.details()
            assert "Health.Check" in info.value.details()
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            watches.pop().cancel()

            async def a_watch_is_let_in() -> bool:
                again = health.Watch(health_pb2.HealthCheckRequest())
                try:
                    await again.read()
                except grpc.aio.AioRpcError:
                    return False
                watches.append(again)
                return True

            await eventually(a_watch_is_let_in, 10, "a place freed by the cancelled watch")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health.Check(health_pb2.HealthCheckRequest(service="pushplat.v1.Push"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "'pushplat.v1.Push'" in info.value.details() and "pushplat.v1.Edge" in info.value.details()
        finally:
            for watch in watches:
                watch.cancel()
    await platform.still_serving()


async def test_reflection_streams_are_capped_and_a_closed_one_frees_its_place(platform):
    """Reflection needs no credentials and a stream may stay open for good, so each port holds at
    most MAX_REFLECTION_STREAMS; one more is RESOURCE_EXHAUSTED, and the open ones keep answering."""
    list_services = reflection_pb2.ServerReflectionRequest(list_services="")

    async def opened(stub: reflection_pb2_grpc.ServerReflectionStub):
        stream = stub.ServerReflectionInfo()
        await stream.write(list_services)
        return stream, await stream.read()

    async with grpc.aio.insecure_channel(platform.dev.api) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        streams = []
        try:
            for _ in range(MAX_REFLECTION_STREAMS):
                stream, reply = await opened(stub)
                streams.append(stream)
                assert "pushplat.v1.Push" in {s.name for s in reply.list_services_response.service}
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await opened(stub)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "reflection streams are open" in info.value.details()
            await streams[0].write(list_services)  # an open one still answers
            assert (await streams[0].read()).list_services_response.service
            streams.pop().cancel()

            async def one_is_let_in() -> bool:
                try:
                    stream, _ = await opened(stub)
                except grpc.aio.AioRpcError:
                    return False
                streams.append(stream)
                return True

            await eventually(one_is_let_in, 10, "a place freed by the cancelled stream")
        finally:
            for stream in streams:
                stream.cancel()
    await platform.still_serving()


async def test_a_second_hello_ends_the_stream_with_invalid_argument_and_the_first_device_keeps_its_route(platform):
    """A Hello after the Welcome (another device, another token) is a protocol error, not silently
    ignored: the stream ends INVALID_ARGUMENT saying what to do, and nothing was rebound."""
    device = RawDevice(platform.dev.edge)
    try:
        await device.hello(user_id="u-a", device_id="a")
        await device.call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(user_id="u-b", device_id="b")))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while await asyncio.wait_for(device.call.read(), 10) is not grpc.aio.EOF:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Hello is sent once" in info.value.details() and "new stream" in info.value.details()
    finally:
        await device.close()
    presence = await platform.api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="u-b"), timeout=10)
    assert not presence.devices, "the second Hello bound nothing"
    await platform.still_serving()


async def test_connect_churn_cannot_flood_the_log_and_what_is_held_back_is_counted(processes: ProcessGroup):
    """session.open/close lines are capped by --session-log-lines-per-second: a client cycling
    connections writes no more than that, the rest are counted, and the next line says how many."""
    rate, metrics = 5, free_port()
    dev = await processes.dev(
        "--session-log-lines-per-second", str(rate), "--log-level", "info", "--metrics-port", str(metrics)
    )
    events = 0

    async def cycle(device_id: str) -> None:
        nonlocal events
        device = RawDevice(dev.edge)
        await device.hello(device_id=device_id)
        await device.close()
        events += 2  # one open, one close

    def lines() -> list[str]:
        log = dev.log().splitlines()
        return [line for line in log if "event=session.open" in line or "event=session.close" in line]

    started = time.monotonic()
    for i in range(40):
        await cycle(f"churn-{i}")

    async def a_later_line_says_how_many_were_held() -> bool:
        await cycle(f"later-{events}")  # each try adds its own two events
        return any("held_back=" in line for line in lines())

    await eventually(a_later_line_says_how_many_were_held, 15, "a line with held_back=")
    elapsed = time.monotonic() - started
    written = lines()
    held = sum(int(line.split("held_back=")[1].split()[0]) for line in written if "held_back=" in line)
    counted = await asyncio.to_thread(scrape, metrics)
    limit_hits = float(re.search(r'^pushplat_limits_hit_total\{limit="session_log_lines"\} (\S+)$', counted, re.M)[1])
    # The bucket: a burst of `rate` lines, then `rate` a second.
    assert len(written) <= rate + rate * elapsed + 1, f"{len(written)} lines in {elapsed:.1f}s for {events} events"
    assert len(written) < events
    assert limit_hits >= held > 0, (limit_hits, held)
