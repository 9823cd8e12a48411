"""The edge's WebSocket transport on real sockets: the wire format, close codes for the error
table's statuses, the handshake checks, its limits and metrics, and wss:// with test certificates.
(The browser itself is in tests/browser; these use the `websockets` client, as a non-browser
client of the wire format would.)"""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client import PushSender
from pushplat_client.v1 import edge_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from pushplat import web
from pushplat.auth import mint_token
from pushplat.edge.websocket import MIN_MESSAGE_BYTES, SUBPROTOCOL
from tests.certs import CA
from tests.helpers import Api, RawDevice, eventually, free_port
from tests.processes import run

SECRET = "websocket-test-secret-0123456789abcdef"
WAIT = 10.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def hello(**fields: str) -> bytes:
    return edge_pb2.ClientFrame(hello=edge_pb2.Hello(client_version="test", **fields)).SerializeToString()


async def frame(ws: ClientConnection) -> edge_pb2.ServerFrame:
    data = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(data, bytes), f"the edge sent a text message: {data!r}"
    return edge_pb2.ServerFrame.FromString(data)


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the edge ended the connection with."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


@pytest.fixture
async def ws_platform(start_platform: Any) -> Any:
    return await start_platform(ws_port=free_port())


def url(server: Any, path: str = "/connect", scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{server.ports.ws}{path}"


@pytest.fixture
async def device(ws_platform: Any) -> AsyncIterator[Any]:
    opened: list[ClientConnection] = []

    async def open_device(**kwargs: Any) -> ClientConnection:
        ws = await connect(url(ws_platform), subprotocols=[SUBPROTOCOL], **kwargs)
        opened.append(ws)
        return ws

    yield open_device
    for ws in opened:
        await ws.close()


async def test_one_binary_message_per_frame_welcome_push_ack_pong_and_the_transport_label(ws_platform, device):
    before_open = metric("pushplat_open_connections_by_transport", transport="websocket")
    ws = await device()
    assert ws.subprotocol == SUBPROTOCOL
    await ws.send(hello(user_id="u1", device_id="d1"))
    welcome = (await frame(ws)).welcome
    assert welcome.session_id and welcome.edge_id == ws_platform.config.edge_id
    assert welcome.heartbeat_interval_ms == ws_platform.config.heartbeat_interval_ms
    assert metric("pushplat_open_connections_by_transport", transport="websocket") == before_open + 1

    async with PushSender(f"127.0.0.1:{ws_platform.ports.api}") as sender:
        sent = await sender.send(user_id="u1", payload=b"\x00binary\xff", at_least_once=True)
        pushed = (await frame(ws)).pushes.messages
        assert [(m.message_id, m.payload) for m in pushed] == [(sent.message_id, b"\x00binary\xff")]
        acks = metric("pushplat_acks_total")
        await ws.send(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[sent.message_id])).SerializeToString())
        await eventually(lambda: metric("pushplat_acks_total") == acks + 1, WAIT, "the ack to count")
        status = await sender.get_status(sent.message_id)
        assert {d.device_id for d in status.devices if d.state == 3} == {"d1"}  # DELIVERY_STATE_ACKED
    await ws.send(edge_pb2.ClientFrame(ping=edge_pb2.Ping()).SerializeToString())
    assert (await frame(ws)).HasField("pong")
    await ws.close()
    await eventually(
        lambda: metric("pushplat_open_connections_by_transport", transport="websocket") == before_open,
        WAIT,
        "the gauge to drop",
    )


async def test_the_error_table_as_close_codes(start_platform, device, ws_platform):
    ws = await device()
    await ws.send(edge_pb2.ClientFrame(ping=edge_pb2.Ping()).SerializeToString())
    assert await closed_with(ws) == (
        4000 + grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "the first frame must be Hello, got ping",
    )

    ws = await device()
    await ws.send("a text message")
    code, reason = await closed_with(ws)
    assert code == 4003 and "binary" in reason

    ws = await device()
    await ws.send(b"\xff\xff\xff not a protobuf")
    code, reason = await closed_with(ws)
    assert code == 4003 and reason.startswith("malformed ClientFrame")

    ws = await device()
    await ws.send(hello(user_id="u1", device_id=""))
    code, reason = await closed_with(ws)
    assert code == 4003 and reason, reason

    auth = await start_platform(ws_port=free_port(), auth_secret=SECRET)
    async with connect(url(auth), subprotocols=[SUBPROTOCOL]) as bad:
        await bad.send(hello(token="not-a-jwt"))
        code, reason = await closed_with(bad)
    assert code == 4000 + grpc.StatusCode.UNAUTHENTICATED.value[0], (code, reason)
    assert len(reason.encode()) <= 123 and "Traceback" not in reason
    async with connect(url(auth), subprotocols=[SUBPROTOCOL]) as good:
        await good.send(hello(token=mint_token(SECRET, "u2", "d2", 600)))
        assert (await frame(good)).HasField("welcome")


async def test_a_stream_without_hello_times_out_and_pending_hellos_are_capped_with_a_retry_hint(start_platform):
    server = await start_platform(ws_port=free_port(), hello_timeout_seconds=0.5, max_pending_hellos=1)
    async with connect(url(server), subprotocols=[SUBPROTOCOL]) as waiting:
        await eventually(lambda: server.edge.lifecycle.awaiting_hello == 1, WAIT, "the first stream to wait")
        async with connect(url(server), subprotocols=[SUBPROTOCOL]) as second:
            code, reason = await closed_with(second)
        assert code == 4000 + grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert reason.startswith("retry-after-ms=") and "--max-pending-hellos" in reason, reason
        code, reason = await closed_with(waiting)
    assert code == 4000 + grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "no Hello" in reason


async def test_a_message_over_the_size_limit_closes_1009_is_counted_and_others_carry_on(start_platform):
    server = await start_platform(ws_port=free_port(), ws_max_message_bytes=MIN_MESSAGE_BYTES)
    hits = metric("pushplat_limits_hit_total", limit="ws_message_bytes")
    async with connect(url(server), subprotocols=[SUBPROTOCOL]) as bystander:
        await bystander.send(hello(user_id="u1", device_id="calm"))
        assert (await frame(bystander)).HasField("welcome")
        async with connect(url(server), subprotocols=[SUBPROTOCOL], max_size=None) as big:
            await big.send(hello(user_id="u1", device_id="loud"))
            assert (await frame(big)).HasField("welcome")
            ids = [f"id-{i:0120d}" for i in range(1000)]  # the largest legal Ack: fits
            await big.send(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=ids)).SerializeToString())
            await big.send(b"\x00" * (MIN_MESSAGE_BYTES + 1))
            code, _ = await closed_with(big)
        assert code == 1009
        assert metric("pushplat_limits_hit_total", limit="ws_message_bytes") == hits + 1
        await bystander.send(edge_pb2.ClientFrame(ping=edge_pb2.Ping()).SerializeToString())
        assert (await frame(bystander)).HasField("pong")


async def test_a_websocket_device_replaces_the_same_devices_grpc_stream(ws_platform, device):
    grpc_device = RawDevice(f"127.0.0.1:{ws_platform.ports.edge}")
    try:
        await grpc_device.hello(user_id="u1", device_id="shared")
        ws = await device()
        await ws.send(hello(user_id="u1", device_id="shared"))
        assert (await frame(ws)).HasField("welcome")
        goaway = await asyncio.wait_for(grpc_device.call.read(), WAIT)
        assert goaway.go_away.reason == edge_pb2.GoAway.REPLACED
    finally:
        await grpc_device.close()


async def test_a_websocket_device_that_stops_reading_is_dropped_as_a_slow_consumer(start_platform):
    server = await start_platform(ws_port=free_port(), slow_consumer_seconds=0.5, goaway_grace_seconds=0.5)
    before = metric("pushplat_disconnects_total", reason="slow_consumer", transport="websocket")
    # max_queue=1: the client library stops reading the socket once one message waits unread.
    async with connect(url(server), subprotocols=[SUBPROTOCOL], max_queue=1, max_size=None) as ws:
        await ws.send(hello(user_id="u1", device_id="never-reads"))
        assert (await frame(ws)).HasField("welcome")
        api = Api(f"127.0.0.1:{server.ports.api}")
        try:
            # 24 MB: more than the loopback socket buffers and the 1 MiB queue budget together.
            await api.send_many([{"device_id": "never-reads", "payload": b"x" * 60 * 1024}] * 400, concurrency=20)
        finally:
            await api.close()
        await eventually(lambda: server.edge.hub.get("never-reads") is None, WAIT, "the slow consumer's disconnect")
        # The write was stuck, so the edge dropped the socket: no close frame (1006), not a hang.
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                while True:
                    await ws.recv()
        assert ws.close_code == 1006, (ws.close_code, ws.close_reason)
    assert metric("pushplat_disconnects_total", reason="slow_consumer", transport="websocket") == before + 1


def http_get(address: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(address, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


async def test_the_http_side_serves_the_page_and_the_bundle_and_404s_the_rest(ws_platform):
    base = url(ws_platform, "", "http")
    status, kind, body = await asyncio.to_thread(http_get, base + "/")
    assert status == 200 and kind.startswith("text/html") and "pushplat demo" in body
    for path in ("/app.js", "/style.css"):
        assert (await asyncio.to_thread(http_get, base + path))[0] == 200
    if web.bundle_built():
        status, kind, body = await asyncio.to_thread(http_get, base + "/sdk/pushplat.js")
        assert status == 200 and kind.startswith("text/javascript") and "pushplat.v1" in body
    for path in ("/nope", "/../pyproject.toml", "/static/app.js", "/sdk/../../__init__.py"):
        assert (await asyncio.to_thread(http_get, base + path))[0] == 404, path


def test_without_the_bundle_the_page_says_how_to_build_it(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(web, "BUNDLE", tmp_path / "missing.js")
    page = web.asset("/")
    assert page is not None and b"scripts/build-web" in page.body
    assert web.asset("/nope") is None


async def test_upgrades_need_the_path_the_subprotocol_and_an_allowed_origin(start_platform):
    server = await start_platform(ws_port=free_port(), ws_allowed_origins=["https://app.example.com"])
    counts = {r: metric("pushplat_ws_handshakes_total", result=r) for r in ("origin", "subprotocol", "not_found")}
    for target, kwargs, status in (
        (url(server, "/elsewhere"), {"subprotocols": [SUBPROTOCOL]}, 404),
        (url(server), {}, 400),
        (url(server), {"subprotocols": [SUBPROTOCOL], "origin": "https://evil.example.com"}, 403),
        (url(server), {"subprotocols": [SUBPROTOCOL], "origin": "http://localhost:8000"}, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(target, **kwargs):
                pass
        assert refused.value.response.status_code == status, (target, kwargs)
    assert metric("pushplat_ws_handshakes_total", result="not_found") == counts["not_found"] + 1
    assert metric("pushplat_ws_handshakes_total", result="subprotocol") == counts["subprotocol"] + 1
    assert metric("pushplat_ws_handshakes_total", result="origin") == counts["origin"] + 2
    for origin in ("https://app.example.com", None):  # no Origin: not a browser page
        async with connect(url(server), subprotocols=[SUBPROTOCOL], origin=origin) as ws:
            await ws.send(hello(user_id="u1", device_id=f"d-{origin}"))
            assert (await frame(ws)).HasField("welcome")


async def test_wss_with_the_tls_flags(start_platform, tmp_path: Path):
    ca = CA(tmp_path / "ca")
    leaf = ca.issue("edge")
    server = await start_platform(ws_port=free_port(), tls_cert=str(leaf.cert), tls_key=str(leaf.key))
    context = ssl.create_default_context(cafile=str(ca.cert))
    async with connect(url(server, scheme="wss"), subprotocols=[SUBPROTOCOL], ssl=context) as ws:
        await ws.send(hello(user_id="u1", device_id="tls-tab"))
        assert (await frame(ws)).HasField("welcome")
    with pytest.raises((ConnectionClosed, OSError, InvalidHandshake)):
        async with connect(url(server), subprotocols=[SUBPROTOCOL], open_timeout=3):  # plaintext to a TLS port
            pass


async def test_draining_sends_goaway_to_websocket_devices_then_closes_them(start_platform):
    server = await start_platform(ws_port=free_port(), drain_seconds=0.2, goaway_grace_seconds=1.0)
    async with connect(url(server), subprotocols=[SUBPROTOCOL]) as ws:
        await ws.send(hello(user_id="u1", device_id="drained"))
        assert (await frame(ws)).HasField("welcome")
        drain = asyncio.create_task(server.drain())
        goaway = (await frame(ws)).go_away
        assert goaway.reason == edge_pb2.GoAway.DRAINING
        # A new device during the drain is turned away with UNAVAILABLE (4014), to reconnect elsewhere.
        async with connect(url(server), subprotocols=[SUBPROTOCOL]) as late:
            await late.send(hello(user_id="u1", device_id="late"))
            code, reason = await closed_with(late)
        assert code == 4014 and "draining" in reason
        await ws.close()
        await asyncio.wait_for(drain, WAIT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ws-max-message-bytes", "1000"], "--ws-max-message-bytes 1000 is too small"),
        (["--ws-allowed-origins", "app.example.com"], "is not an origin like https://app.example.com"),
    ],
)
async def test_bad_websocket_options_stop_the_start_with_a_clear_error(args: list[str], message: str):
    ports = ["--edge-port", str(free_port()), "--api-port", str(free_port()), "--ws-port", str(free_port())]
    code, _, err = await run("dev", *ports, *args, timeout=30)
    assert code == 2 and message in err, err


async def test_a_taken_ws_port_names_the_option(ws_platform):
    ports = ["--edge-port", str(free_port()), "--api-port", str(free_port())]
    code, _, err = await run("dev", *ports, "--ws-port", str(ws_platform.ports.ws), timeout=30)
    assert code == 2 and "choose another --ws-port" in err, err
