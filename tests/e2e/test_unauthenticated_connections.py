"""Connections that never authenticate cost good clients nothing: failed Hellos spend no connect
budget, streams waiting for a Hello are capped, and TCP connections that never open a stream are
closed after a short time, while good clients keep connecting and receiving."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc

from pushplat.auth import mint_token
from tests.helpers import RawDevice, eventually

SECRET = "connections-secret-0123456789abcdef0123"
# The HTTP/2 client preface and an empty SETTINGS frame: a connection that is "up" as far as
# HTTP/2 goes, but opens no stream.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def outcome(address: str, hello: edge_pb2.Hello) -> str:
    device = RawDevice(address)
    try:
        await device.call.write(edge_pb2.ClientFrame(hello=hello))
        frame = await device.call.read()
        return "welcome" if frame is not grpc.aio.EOF and frame.HasField("welcome") else "other"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    finally:
        await device.close()


async def test_failed_hellos_do_not_spend_the_connect_budget(start_platform):
    # A budget of 5 new connections per second (and a burst of 5).
    platform = await start_platform(auth_secret=SECRET, max_connects_per_second=5)
    edge = addr(platform.ports.edge)
    bad = await asyncio.gather(*(outcome(edge, edge_pb2.Hello(token=f"forged-{i}")) for i in range(50)))
    assert set(bad) == {"UNAUTHENTICATED"}, "refused for what they are, not for the budget"
    good = [await outcome(edge, edge_pb2.Hello(token=mint_token(SECRET, f"u{i}", f"d{i}"))) for i in range(5)]
    assert good == ["welcome"] * 5, "the whole budget is still there for good clients"
    assert await outcome(edge, edge_pb2.Hello(token=mint_token(SECRET, "u9", "d9"))) == "RESOURCE_EXHAUSTED"


async def test_streams_waiting_for_a_hello_are_capped(start_platform, clients):
    platform = await start_platform(max_pending_hellos=20, hello_timeout_seconds=30)
    edge = addr(platform.ports.edge)
    veteran = clients("device", edge)
    await veteran.hello(user_id="v", device_id="veteran")
    channel = grpc.aio.insecure_channel(edge)
    silent = [edge_pb2_grpc.EdgeStub(channel).Connect() for _ in range(20)]
    try:
        for call in silent:
            await call.wait_for_connection()

        async def all_waiting() -> bool:
            return platform.edge.lifecycle.awaiting_hello == 20

        await eventually(all_waiting, what="20 streams to wait for their Hello")
        before = REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": "pending_hellos"}) or 0.0
        late = RawDevice(edge)
        try:
            await late.call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(device_id="late")))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await late.call.read()
        finally:
            await late.close()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already waiting to send their Hello" in info.value.details()
        assert 15_000 <= int(dict(info.value.trailing_metadata())["retry-after-ms"]) <= 45_000
        assert REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": "pending_hellos"}) == before + 1
        # The veteran, already past its Hello, is not affected.
        veteran_api = clients("api", addr(platform.ports.api))
        sent = await veteran_api.send(device_id="veteran", payload=b"still served")
        [message] = await veteran.read_messages(1)
        assert message.message_id == sent.message_id
    finally:
        for call in silent:
            call.cancel()
        await channel.close()

    async def slots_free() -> bool:
        return platform.edge.lifecycle.awaiting_hello == 0

    await eventually(slots_free, what="the silent streams to leave")
    assert await outcome(edge, edge_pb2.Hello(device_id="late")) == "welcome"


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass  # the server's SETTINGS/GOAWAY; the close comes after
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # recv returned b"": the peer closed


@pytest.mark.parametrize("port", ["edge", "api"])
async def test_silent_tcp_connections_are_closed_while_good_clients_connect(start_platform, clients, port):
    platform = await start_platform(handshake_timeout_seconds=1.0, idle_connection_seconds=2.0)
    target = getattr(platform.ports, port)
    raw, preface_only = [], []
    for i in range(400):
        sock = socket.create_connection(("127.0.0.1", target))
        if i % 4 == 0:  # a quarter complete the HTTP/2 preface, then say nothing
            sock.sendall(PREFACE)
            preface_only.append(sock)
        else:
            raw.append(sock)
        sock.setblocking(False)
    opened = time.monotonic()
    try:
        # Meanwhile good clients connect and are served.
        api = clients("api", addr(platform.ports.api))
        for i in range(20):
            device = clients("device", addr(platform.ports.edge))
            await device.hello(user_id="u", device_id=f"good-{i}")
            sent = await api.send(device_id=f"good-{i}", payload=b"hi")
            [message] = await device.read_messages(1)
            assert message.message_id == sent.message_id

        # Bounds, from when they opened: the configured timeout plus 2 s for a loaded 2-core machine.
        for socks, bound, what in (
            (raw, 1.0 + 2.0, "300 connections that never sent a byte to be closed"),
            (preface_only, 2.0 + 2.0, "100 idle HTTP/2 connections to be closed"),
        ):
            left = opened + bound - time.monotonic()
            await eventually(lambda socks=socks: all(_closed_by_peer(s) for s in socks), max(left, 0.05), what)
        print(f"{port}: all silent connections closed {time.monotonic() - opened:.1f}s after opening", flush=True)
    finally:
        for sock in raw + preface_only:
            sock.close()
