"""The README's error table, read from the README and checked row by row against a running server.

Each row maps to concrete bad calls; a row without a mapping fails, so a new row needs one."""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, push_pb2

from pushplat.auth import mint_token
from pushplat.config import Config
from pushplat.edge.delivery import DeliveryServicer
from pushplat.edge.hub import Hub
from pushplat.internal_auth import InternalAuth
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc
from tests.certs import CA
from tests.helpers import Api, eventually
from tests.processes import service

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "error-table-secret-0123456789abcdef0123"
Observed = list[tuple[str, grpc.StatusCode, tuple]]  # (what was tried, status, trailing metadata)


def error_table() -> dict[str, str]:
    """case -> status code name, from the table under the README's `## Errors`."""
    section = README.read_text().split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # after header and rule
    table = {}
    for row in rows:
        case, status = (cell.strip() for cell in row.strip("|").split("|", 1))
        table[case] = re.search(r"`([A-Z_]+)`", status).group(1)
    return table


async def rpc_error(awaitable: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value


async def send_status(api: Api, what: str, **fields: object) -> tuple[str, grpc.StatusCode, tuple]:
    err = await rpc_error(api.send(**fields))
    return what, err.code(), tuple(err.trailing_metadata() or ())


async def connect_status(edge: str, what: str, *frames: edge_pb2.ClientFrame | bytes) -> tuple:
    channel = grpc.aio.insecure_channel(edge)
    call = channel.stream_stream("/pushplat.v1.Edge/Connect", request_serializer=_bytes, response_deserializer=_bytes)()
    try:
        for frame in frames:
            try:
                await call.write(frame)
            except grpc.aio.AioRpcError as err:  # the call failed before the frame went out
                return what, err.code(), tuple(err.trailing_metadata() or ())
        async with asyncio.timeout(10):
            while True:  # frames before the error (a Welcome) are fine; the stream must end in one
                try:
                    frame = await call.read()
                except grpc.aio.AioRpcError as err:
                    return what, err.code(), tuple(err.trailing_metadata() or ())
                assert frame is not grpc.aio.EOF, f"{what}: the stream ended without an error"
    finally:
        call.cancel()
        await channel.close()


def _bytes(frame: edge_pb2.ClientFrame | bytes) -> bytes:
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


def hello(**fields: str) -> edge_pb2.ClientFrame:
    return edge_pb2.ClientFrame(hello=edge_pb2.Hello(**fields))


async def bad_target_or_ttl(start, clients) -> Observed:
    server = await start(max_ttl_seconds=3600)
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    return [
        await send_status(api, "no target", payload=b"x"),
        await send_status(api, "empty target", user_id="", payload=b"x"),
        await send_status(api, "ttl -1", device_id="d", payload=b"x", ttl_seconds=-1),
        await send_status(api, "ttl over --max-ttl-seconds", device_id="d", payload=b"x", ttl_seconds=3601),
    ]


async def payload_over_limit(start, clients) -> Observed:
    server = await start()  # the default limit, 64 KiB
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    return [await send_status(api, "65537-byte payload", device_id="d", payload=b"x" * 65537)]


async def bad_first_frame(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start()).ports.edge}"
    return [
        await connect_status(edge, "Ping first", edge_pb2.ClientFrame(ping=edge_pb2.Ping())),
        await connect_status(edge, "empty frame first", edge_pb2.ClientFrame()),
        await connect_status(edge, "bytes that are no ClientFrame", b"\xff\xff\xff\xff nonsense"),
        await connect_status(edge, "garbage after Hello", hello(device_id="g"), b"\x0a\xff\xff"),
        await connect_status(edge, "a second Hello", hello(device_id="h1"), hello(device_id="h2")),
    ]


async def hello_without_device(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start()).ports.edge}"  # auth off
    return [
        await connect_status(edge, "Hello without ids", hello()),
        await connect_status(edge, "Hello with a user only", hello(user_id="u")),
    ]


def twice_keyed(api: Api) -> Api:
    """Two authorization entries (a wrong one first, then the right one): neither is picked."""
    api.metadata = (("authorization", "Bearer nope"), ("authorization", "Bearer key-1"))
    return api


async def bad_credentials(start, clients) -> Observed:
    server = await start(auth_secret=SECRET, api_keys=["key-1"])
    edge, api_address = f"127.0.0.1:{server.ports.edge}", f"127.0.0.1:{server.ports.api}"
    return [
        await connect_status(edge, "no token", hello(device_id="d")),
        await connect_status(
            edge, "forged token", hello(token=mint_token("other-secret-0123456789abcdef0123", "u", "d"))
        ),
        await connect_status(edge, "expired token", hello(token=mint_token(SECRET, "u", "d", ttl_seconds=-5))),
        await send_status(clients("api", api_address), "no API key", device_id="d", payload=b"x"),
        await send_status(clients("api", api_address, api_key="nope"), "unknown API key", device_id="d", payload=b"x"),
        await send_status(twice_keyed(clients("api", api_address)), "two API keys", device_id="d", payload=b"x"),
    ]


async def admission(start, clients) -> Observed:
    observed = []
    capped = await start(max_connections=1)
    first = clients("device", f"127.0.0.1:{capped.ports.edge}")
    await first.hello(device_id="first")
    observed.append(
        await connect_status(f"127.0.0.1:{capped.ports.edge}", "over --max-connections", hello(device_id="x"))
    )
    slow = await start(max_connects_per_second=1)
    edge = f"127.0.0.1:{slow.ports.edge}"
    await clients("device", edge).hello(device_id="takes-the-only-token")
    observed.append(await connect_status(edge, "over --max-connects-per-second", hello(device_id="y")))
    return observed


async def slow_consumer(start, clients) -> Observed:
    server = await start(slow_consumer_seconds=0.5, goaway_grace_seconds=0.5)
    device = clients("device", f"127.0.0.1:{server.ports.edge}")
    await device.hello(device_id="never-reads")
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    # 12 MB: more than the stream's flow-control window and the 1 MiB queue budget together.
    await api.send_many([{"device_id": "never-reads", "payload": b"x" * 60 * 1024}] * 200, concurrency=20)
    # Read only once the edge gave up on it: reading earlier would make it a fast consumer.
    await eventually(lambda: server.edge.hub.get("never-reads") is None, what="the slow consumer's disconnect")
    gone = await rpc_error(_read_to_the_end(device.call))
    assert "slow consumer" in (gone.details() or ""), gone.details()
    return [("a device that never reads", gone.code(), ())]


async def _read_to_the_end(call) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(30):
        while await call.read() is not grpc.aio.EOF:
            pass


async def queue_unavailable(start, clients) -> Observed:
    # The idempotency-store half of this row needs a real Redis to die: see
    # tests/e2e/test_backend_failures.py::test_registry_dying_while_running_gives_unavailable.
    server = await start(lane_capacity=1)
    await server.router.pause()  # nothing drains the lane, so it fills
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    await api.send(device_id="d", payload=b"fills the lane")
    observed = [await send_status(api, "send to a full lane", device_id="d", payload=b"x")]
    server.router.resume()
    return observed


async def unknown_status(start, clients) -> Observed:
    address = f"127.0.0.1:{(await start(api_keys=['key-a', 'key-b'])).ports.api}"
    api = clients("api", address, api_key="key-a")
    err = await rpc_error(
        api.stub.GetStatus(push_pb2.GetStatusRequest(message_id="no-such-id"), metadata=api.metadata, timeout=5)
    )
    sent = await api.send(device_id="d", payload=b"a's")
    other = clients("api", address, api_key="key-b")
    theirs = await rpc_error(
        other.stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent.message_id), metadata=other.metadata, timeout=5)
    )
    return [("GetStatus(no-such-id)", err.code(), ()), ("GetStatus of another sender's message", theirs.code(), ())]


async def bad_ids(start, clients) -> Observed:
    server = await start()
    edge, api = f"127.0.0.1:{server.ports.edge}", clients("api", f"127.0.0.1:{server.ports.api}")
    secured = await start(auth_secret=SECRET)
    blank = await rpc_error(api.stub.GetStatus(push_pb2.GetStatusRequest(message_id="   "), timeout=5))
    long_user = await rpc_error(api.stub.GetPresence(push_pb2.GetPresenceRequest(user_id="u" * 129), timeout=5))
    return [
        await connect_status(edge, "Hello.device_id with a newline", hello(device_id="a\nb")),
        await connect_status(edge, "Hello.user_id of 129 bytes", hello(user_id="u" * 129, device_id="d")),
        await connect_status(
            f"127.0.0.1:{secured.ports.edge}", "token with an empty sub", hello(token=mint_token(SECRET, "", "d"))
        ),
        await send_status(api, "1 MB device target", device_id="d" * (1 << 20), payload=b"x"),
        await send_status(api, "user target of spaces", user_id="   ", payload=b"x"),
        ("GetStatus of a blank id", blank.code(), ()),
        ("GetPresence of a 129-byte user", long_user.code(), ()),
    ]


async def labels_and_short_fields(start, clients) -> Observed:
    api = clients("api", f"127.0.0.1:{(await start()).ports.api}")
    return [
        await send_status(api, "17 labels", device_id="d", payload=b"x", labels={f"k{i}": "" for i in range(17)}),
        await send_status(api, "65-byte label key", device_id="d", payload=b"x", labels={"k" * 65: "v"}),
        await send_status(api, "257-byte label value", device_id="d", payload=b"x", labels={"k": "v" * 257}),
        await send_status(api, "257-byte collapse_key", device_id="d", payload=b"x", collapse_key="c" * 257),
        await send_status(api, "257-byte idempotency_key", device_id="d", payload=b"x", idempotency_key="i" * 257),
    ]


async def batch_too_large(start, clients) -> Observed:
    item = push_pb2.SendRequest(device_id="d", payload=b"x")
    api = clients("api", f"127.0.0.1:{(await start()).ports.api}")
    over = await rpc_error(api.stub.SendBatch(push_pb2.SendBatchRequest(requests=[item] * 501), timeout=10))
    burst = clients("api", f"127.0.0.1:{(await start(send_rate=10, send_burst=5)).ports.api}")
    six = await rpc_error(burst.stub.SendBatch(push_pb2.SendBatchRequest(requests=[item] * 6), timeout=10))
    return [("SendBatch of 501", over.code(), ()), ("SendBatch of 6 with --send-burst 5", six.code(), ())]


async def ack_or_token_too_large(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start()).ports.edge}"
    secured = f"127.0.0.1:{(await start(auth_secret=SECRET)).ports.edge}"
    flood = edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[f"m{i}" for i in range(1001)]))
    return [
        await connect_status(edge, "Ack of 1,001 ids", hello(device_id="acker"), flood),
        await connect_status(secured, "9 KiB token", hello(token=mint_token(SECRET, "u", "d" * 9000))),
    ]


async def idempotency_key_reused(start, clients) -> Observed:
    api = clients("api", f"127.0.0.1:{(await start()).ports.api}")
    await api.send(device_id="d", payload=b"first", idempotency_key="order-1")
    return [
        await send_status(api, "same key, other payload", device_id="d", payload=b"second", idempotency_key="order-1"),
        await send_status(api, "same key, other target", device_id="e", payload=b"first", idempotency_key="order-1"),
    ]


async def device_of_another_user(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start(auth_secret=SECRET)).ports.edge}"
    await clients("device", edge).hello(token=mint_token(SECRET, "alice", "alice-phone"))
    return [
        await connect_status(edge, "mallory as alice-phone", hello(token=mint_token(SECRET, "mallory", "alice-phone")))
    ]


async def too_many_pending_hellos(start, clients) -> Observed:
    server = await start(max_pending_hellos=3, hello_timeout_seconds=30)
    edge = f"127.0.0.1:{server.ports.edge}"
    channel = grpc.aio.insecure_channel(edge)
    silent = [channel.stream_stream("/pushplat.v1.Edge/Connect")() for _ in range(3)]
    try:
        for call in silent:
            await call.wait_for_connection()
        await eventually(lambda: server.edge.lifecycle.awaiting_hello == 3, what="3 streams to wait for a Hello")
        return [await connect_status(edge, "a fourth stream while 3 wait for their Hello", hello(device_id="late"))]
    finally:
        for call in silent:
            call.cancel()
        await channel.close()


async def over_send_rate(start, clients) -> Observed:
    api = clients("api", f"127.0.0.1:{(await start(send_rate=1, send_burst=2)).ports.api}")
    await api.send(device_id="d", payload=b"1")
    await api.send(device_id="d", payload=b"2")
    return [await send_status(api, "third send with --send-burst 2", device_id="d", payload=b"3")]


async def no_hello_in_time(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start(hello_timeout_seconds=0.3)).ports.edge}"
    return [await connect_status(edge, "a stream that never says Hello")]


async def store_down_on_connect(start, clients) -> Observed:

    with tempfile.TemporaryDirectory() as state:
        async with service("redis", Path(state) / "redis") as redis:
            server = await start(registry=redis.env["PUSHPLAT_TEST_REDIS_URL"])
            edge = f"127.0.0.1:{server.ports.edge}"
            await clients("device", edge).hello(device_id="while-up")
            assert await redis.stop() == 0
            return [await connect_status(edge, "Hello with Redis down", hello(device_id="after"))]


async def delivery_without_secret(start, clients) -> Observed:
    # A delivery port exists only on a separately run edge; this is its server as Server builds it
    # (the Delivery service behind the internal-secret interceptor) without the Redis it needs.
    auth = InternalAuth.from_config(Config(internal_secrets=["internal-secret-0123456789abcdef0123"]))
    server = grpc.aio.server(interceptors=auth.interceptors())
    delivery_pb2_grpc.add_DeliveryServicer_to_server(DeliveryServicer(Hub(), "edge-1"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    observed: Observed = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = delivery_pb2_grpc.DeliveryStub(channel)
            for what, call in (
                ("Deliver without the secret", stub.Deliver(delivery_pb2.DeliverRequest(edge_id="edge-1"), timeout=5)),
                ("Evict without the secret", stub.Evict(delivery_pb2.EvictRequest(device_id="d"), timeout=5)),
            ):
                err = await rpc_error(call)
                observed.append((what, err.code(), ()))
    finally:
        await server.stop(None)
    return observed


async def failed_tls_handshake(start, clients) -> Observed:
    with tempfile.TemporaryDirectory() as where:
        ca, other = CA(Path(where) / "ca"), CA(Path(where) / "other", name="another CA")
        leaf = ca.issue("server")
        server = await start(tls_cert=str(leaf.cert), tls_key=str(leaf.key), api_tls_client_ca=str(ca.cert))
        api = f"127.0.0.1:{server.ports.api}"
        observed = [await send_status(clients("api", api), "plaintext to a TLS api port", device_id="d", payload=b"x")]
        observed.append(await connect_status(f"127.0.0.1:{server.ports.edge}", "plaintext to a TLS edge", hello()))
        for what, credentials in (
            ("a server certificate from another CA", grpc.ssl_channel_credentials(other.cert_pem)),
            ("no client certificate where one is required", grpc.ssl_channel_credentials(ca.cert_pem)),
        ):
            async with grpc.aio.secure_channel(api, credentials) as channel:
                send = channel.unary_unary("/pushplat.v1.Push/Send")
                request = push_pb2.SendRequest(device_id="d", payload=b"x").SerializeToString()
                err = await rpc_error(send(request, timeout=5))
                observed.append((what, err.code(), ()))
        return observed


_CODES = {code.value[0]: code for code in grpc.StatusCode}


async def frame_refusals(edge: str, what: str, *frames: edge_pb2.ClientFrame) -> Observed:
    """Hello, then each Subscribe/Unsubscribe frame: the code of every topic its answer refused."""
    channel = grpc.aio.insecure_channel(edge)
    call = edge_pb2_grpc.EdgeStub(channel).Connect()
    observed: Observed = []
    try:
        await call.write(hello(user_id="u", device_id=f"frames-{what}"))
        assert (await asyncio.wait_for(call.read(), 10)).HasField("welcome")
        for frame in frames:
            await call.write(frame)
            answer = await asyncio.wait_for(call.read(), 10)
            refused = answer.subscription.refused
            assert refused, f"{what}: nothing refused in {answer}"
            observed += [(f"{what}: {r.topic[:20]!r}", _CODES[r.code], ()) for r in refused]
    finally:
        call.cancel()
        await channel.close()
    return observed


async def call_status(what: str, call: Awaitable[object]) -> tuple[str, grpc.StatusCode, tuple]:
    err = await rpc_error(call)
    return what, err.code(), ()


def subscribe_frame(*topics: str) -> edge_pb2.ClientFrame:
    return edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=list(topics)))


async def bad_topic_names(start, clients) -> Observed:
    server = await start()
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    stub = api.stub
    observed = [
        await send_status(api, "Send to 'a b'", topic="a b", payload=b"x"),
        await send_status(api, "Send to a 257-char topic", topic="t" * 257, payload=b"x"),
        await send_status(api, "at-least-once Send to a topic", topic="t", payload=b"x", delivery=1),
        await call_status(
            "Subscribe to 'é'", stub.Subscribe(push_pb2.SubscribeRequest(topics=["é"], device_ids=["d"]), timeout=5)
        ),
        await call_status(
            "Unsubscribe from ''", stub.Unsubscribe(push_pb2.SubscribeRequest(topics=[""], device_ids=["d"]), timeout=5)
        ),
    ]
    edge = f"127.0.0.1:{server.ports.edge}"
    return observed + await frame_refusals(edge, "bad names", subscribe_frame("a/b", "", "x" * 300))


async def topic_request_sizes(start, clients) -> Observed:
    server = await start()
    stub = clients("api", f"127.0.0.1:{server.ports.api}").stub

    def request(topics: int, devices: int, users: int = 0) -> push_pb2.SubscribeRequest:
        return push_pb2.SubscribeRequest(
            topics=[f"t{i}" for i in range(topics)],
            device_ids=[f"d{i}" for i in range(devices)],
            user_ids=[f"u{i}" for i in range(users)],
        )

    observed = [
        await call_status("no topic", stub.Subscribe(request(0, 1), timeout=5)),
        await call_status("101 topics", stub.Subscribe(request(101, 1), timeout=5)),
        await call_status("no device or user", stub.Unsubscribe(request(1, 0), timeout=5)),
        await call_status("1,001 devices and users", stub.Subscribe(request(1, 600, 401), timeout=5)),
    ]
    frame = await connect_status(
        f"127.0.0.1:{server.ports.edge}",
        "a frame of 101 topics",
        hello(device_id="many"),
        subscribe_frame(*(f"t{i}" for i in range(101))),
    )
    return [*observed, frame]


async def topics_over_limits(start, clients) -> Observed:
    server = await start(max_topics_per_device=2, topic_changes_per_second=1.0)
    stub = clients("api", f"127.0.0.1:{server.ports.api}").stub
    reply = await stub.Subscribe(push_pb2.SubscribeRequest(topics=["a", "b", "c"], device_ids=["full"]), timeout=5)
    observed: Observed = [(f"call: {r.topic}", _CODES[r.code], ()) for r in reply.results[0].refused]
    assert [r.topic for r in reply.results[0].refused] == ["c"]
    edge = f"127.0.0.1:{server.ports.edge}"
    observed += await frame_refusals(edge, "device full", subscribe_frame("x", "y", "z"))
    # Twice the rate at once (2 frames), then refused: frames 1-2 pass, frame 3 is refused.
    observed += await frame_refusals(
        edge, "rate", subscribe_frame("x", "y", "z"), subscribe_frame("x", "y", "z"), subscribe_frame("q")
    )
    return observed


async def subscription_store_down(start, clients) -> Observed:
    with tempfile.TemporaryDirectory() as state:
        async with service("redis", Path(state) / "redis") as redis:
            server = await start(registry=redis.env["PUSHPLAT_TEST_REDIS_URL"])
            stub = clients("api", f"127.0.0.1:{server.ports.api}").stub
            edge = f"127.0.0.1:{server.ports.edge}"
            channel = grpc.aio.insecure_channel(edge)
            call = edge_pb2_grpc.EdgeStub(channel).Connect()
            try:
                await call.write(hello(user_id="u", device_id="connected"))
                assert (await asyncio.wait_for(call.read(), 10)).HasField("welcome")
                assert await redis.stop() == 0
                request = push_pb2.SubscribeRequest(topics=["t"], device_ids=["d"])
                observed = [
                    await call_status("Subscribe", stub.Subscribe(request, timeout=10)),
                    await call_status("Unsubscribe", stub.Unsubscribe(request, timeout=10)),
                    await call_status(
                        "GetSubscriptions",
                        stub.GetSubscriptions(push_pb2.GetSubscriptionsRequest(device_id="d"), timeout=10),
                    ),
                ]
                await call.write(subscribe_frame("t"))
                answer = await asyncio.wait_for(call.read(), 15)
                observed += [(f"frame: {r.topic}", _CODES[r.code], ()) for r in answer.subscription.refused]
                assert answer.subscription.refused
            finally:
                call.cancel()
                await channel.close()
            return observed


Check = Callable[..., Awaitable[Observed]]
CHECKS: dict[str, Check] = {
    "Missing target, or `ttl_seconds` out of range": bad_target_or_ttl,
    "Payload over `--max-payload-bytes` (64 KiB by default)": payload_over_limit,
    "The first frame of a stream is not `Hello`, a second `Hello` on the same stream (ends that stream: open a "
    "new one to change device or token), or a frame is not a valid `ClientFrame`": bad_first_frame,
    "A `Hello` without `device_id` while auth is off": hello_without_device,
    "A user, device or message id (in `Hello`, a token's claims, a `Send` target, `GetStatus`, `GetPresence`) "
    "that is empty, only whitespace, over 128 bytes or not printable": bad_ids,
    "More than 16 labels, a label key over 64 bytes or a value over 256 bytes; an `idempotency_key`, "
    "`collapse_key` or `content_type` over 256 bytes": labels_and_short_fields,
    "A `SendBatch` of more than 500 requests, or of more than the sender's `--send-burst`": batch_too_large,
    "An `Ack` frame with more than 1,000 ids (ends that stream); a device token over 8 KiB": ack_or_token_too_large,
    "Bad or expired token; missing, unknown or repeated API key": bad_credentials,
    "A call on a delivery port without the internal secret": delivery_without_secret,
    "A failed TLS handshake: plaintext to a TLS port, a server certificate from another CA, "
    "no client certificate where one is required": failed_tls_handshake,
    "The same `idempotency_key`, from the same sender within the window, on a different request": (
        idempotency_key_reused
    ),
    "A `Hello` for a device id that belongs to another user": device_of_another_user,
    "Too many connections, or new connections per second, on an edge": admission,
    "A device that reads more slowly than its messages arrive, over its queue budget for "
    "`--slow-consumer-seconds`": slow_consumer,
    "More than `--max-pending-hellos` streams waiting to send their `Hello`": too_many_pending_hellos,
    "A sender over its `--send-rate`": over_send_rate,
    "No `Hello` within `--hello-timeout-seconds` of opening the stream": no_hello_in_time,
    "The queue (or the idempotency store) is unavailable": queue_unavailable,
    "The registry or the device-ownership check is unavailable when a device connects": store_down_on_connect,
    "`GetStatus` for an unknown message, or for another sender's": unknown_status,
    "A topic name (in `Send`, `Subscribe`, `Unsubscribe` or a device's `Subscribe` frame) that does not match "
    "`[A-Za-z0-9_.~%-]{1,256}`; an at-least-once `Send` to a topic": bad_topic_names,
    "A `Subscribe`/`Unsubscribe` call with no topic or more than 100, with no device or user, or with more than "
    "1,000 devices (users expanded to their devices); a `Subscribe`/`Unsubscribe` frame with more than 100 topics "
    "(ends that stream)": topic_request_sizes,
    "A subscribe that would take a device past `--max-topics-per-device` (2,000); a device sending more than "
    "`--topic-changes-per-second` subscription frames": topics_over_limits,
    "The subscription store is unavailable (`Subscribe`, `Unsubscribe`, `GetSubscriptions`, a device's "
    "`Subscribe` frame)": subscription_store_down,
}


def test_every_row_of_the_readme_error_table_has_a_check():
    table = error_table()
    assert len(table) >= 7, table
    assert not (set(table) - set(CHECKS)), f"README error rows without a check here: {sorted(set(table) - set(CHECKS))}"
    assert not (set(CHECKS) - set(table)), (
        f"checks for rows the README no longer has: {sorted(set(CHECKS) - set(table))}"
    )


@pytest.mark.parametrize("case", list(error_table()))
async def test_readme_error_row(case, start_platform, clients):
    if case not in CHECKS:
        pytest.fail(f"the README error row {case!r} has no check in {__file__}")
    status = grpc.StatusCode[error_table()[case]]
    observed = await CHECKS[case](start_platform, clients)
    assert observed
    wrong = [(what, code.name) for what, code, _ in observed if code != status]
    assert not wrong, f"README says {status.name} for {case!r}; got {wrong}"
    if "retry-after-ms" in README.read_text().split(case, 1)[1].splitlines()[0]:
        for what, _, trailers in observed:
            assert dict(trailers).get("retry-after-ms", "").isdigit(), f"{what}: no retry-after-ms trailer"


async def test_garbage_right_after_hello_always_ends_in_invalid_argument(platform):
    """Hello and a malformed frame back to back race the edge's Welcome write; the status must still
    go out (it used to fail with TOO_MANY_OPERATIONS and leave a few streams hanging)."""
    edge = f"127.0.0.1:{platform.ports.edge}"
    results = await asyncio.gather(
        *(connect_status(edge, f"race {i}", hello(device_id=f"race-{i}"), b"\x0a\xff\xff") for i in range(300))
    )
    assert {code for _, code, _ in results} == {grpc.StatusCode.INVALID_ARGUMENT}
