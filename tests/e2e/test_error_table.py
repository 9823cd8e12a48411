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
from pushplat_client.v1 import edge_pb2, push_pb2

from pushplat.auth import mint_token
from pushplat.config import Config
from pushplat.edge.delivery import DeliveryServicer
from pushplat.edge.hub import Hub
from pushplat.internal_auth import InternalAuth
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc
from tests.certs import CA
from tests.helpers import Api

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
    ]


async def hello_without_device(start, clients) -> Observed:
    edge = f"127.0.0.1:{(await start()).ports.edge}"  # auth off
    return [
        await connect_status(edge, "Hello without ids", hello()),
        await connect_status(edge, "Hello with a user only", hello(user_id="u")),
    ]


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
    api = clients("api", f"127.0.0.1:{(await start()).ports.api}")
    err = await rpc_error(api.stub.GetStatus(push_pb2.GetStatusRequest(message_id="no-such-id"), timeout=5))
    return [("GetStatus(no-such-id)", err.code(), ())]


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


Check = Callable[..., Awaitable[Observed]]
CHECKS: dict[str, Check] = {
    "Missing target, or `ttl_seconds` out of range": bad_target_or_ttl,
    "Payload over `--max-payload-bytes` (64 KiB by default)": payload_over_limit,
    "The first frame of a stream is not `Hello`, or a frame is not a valid `ClientFrame`": bad_first_frame,
    "A `Hello` without `device_id` while auth is off": hello_without_device,
    "Bad or expired token; missing or unknown API key": bad_credentials,
    "Too many connections, or new connections per second, on an edge": admission,
    "The queue (or the idempotency store) is unavailable": queue_unavailable,
    "`GetStatus` for an unknown message": unknown_status,
    "A call on a delivery port without the internal secret": delivery_without_secret,
    "A failed TLS handshake: plaintext to a TLS port, a server certificate from another CA, "
    "no client certificate where one is required": failed_tls_handshake,
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
