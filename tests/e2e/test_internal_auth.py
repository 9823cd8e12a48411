"""Internal auth on the delivery port, in process: the secret interceptor and mutual TLS on a
real gRPC server holding an edge's Delivery service, the links that call it, and the start-up
rules for separately run edges and routers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pushplat_client import PushClient, PushSender
from pushplat_client.v1 import message_pb2

from pushplat.config import Config
from pushplat.edge.delivery import DeliveryServicer
from pushplat.edge.hub import Hub
from pushplat.edge_link import GrpcEdgeLink
from pushplat.internal_auth import METADATA_KEY, InternalAuth
from pushplat.logs import LogLimiter
from pushplat.tls import CertificateError
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc
from tests.certs import CA
from tests.helpers import free_port
from tests.processes import run, scrape

SECRET = "s" * 40
NO_SESSION = delivery_pb2.DeliverResponse.Outcome.NO_SESSION


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    where = tmp_path_factory.mktemp("internal-pki")
    ca, other = CA(where / "ca", name="internal CA"), CA(where / "other", name="other CA")
    # The edge's certificate names a service, not the IP routers dial (as with pod IPs).
    edge = ca.issue("edge", dns=("pushplat-edge",), ips=())
    return {"ca": ca, "edge": edge, "router": ca.issue("router"), "other": other.issue("stranger")}


def mtls_config(pki: dict, who: str = "router", ca: CA | None = None, **extra: object) -> Config:
    leaf = pki[who]
    return Config(
        internal_tls_cert=str(leaf.cert),
        internal_tls_key=str(leaf.key),
        internal_ca=str((ca or pki["ca"]).cert),
        **extra,
    )


@pytest.fixture
async def delivery_port():
    """Start an edge's delivery port with the given InternalAuth; yields (start, edge servicer)."""
    servers: list[grpc.aio.Server] = []
    edge = DeliveryServicer(Hub(), "edge-1")

    async def start(auth: InternalAuth) -> str:
        server = grpc.aio.server(interceptors=auth.interceptors() or None)
        delivery_pb2_grpc.add_DeliveryServicer_to_server(edge, server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        reflection.enable_server_reflection(["pushplat.v1.Delivery", reflection.SERVICE_NAME], server)
        creds = auth.server_credentials()
        port = server.add_secure_port("127.0.0.1:0", creds) if creds else server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start, edge
    for server in servers:
        await server.stop(None)


def routed(device: str = "victim") -> delivery_pb2.Routed:
    return delivery_pb2.Routed(device_id=device, message=message_pb2.Message(message_id="forged", payload=b"x"))


async def test_secret_is_required_on_every_delivery_method_but_health(delivery_port):
    start, _ = delivery_port
    address = await start(InternalAuth.from_config(Config(internal_secrets=[SECRET])))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = delivery_pb2_grpc.DeliveryStub(channel)
        for metadata in (
            None,
            ((METADATA_KEY, "wrong"),),
            ((METADATA_KEY, SECRET[:-1]),),
            (("authorization", SECRET),),
        ):
            for call, request in (
                (stub.Deliver, delivery_pb2.DeliverRequest(edge_id="edge-1", items=[routed()])),
                (stub.Evict, delivery_pb2.EvictRequest(device_id="victim", session_id="s")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request, metadata=metadata, timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
                assert METADATA_KEY in info.value.details()
        # Reflection would describe the internal API: also behind the secret.
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Health stays open, for probes.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        ok = await stub.Deliver(
            delivery_pb2.DeliverRequest(edge_id="edge-1", items=[routed()]), metadata=((METADATA_KEY, SECRET),)
        )
        assert list(ok.outcomes) == [NO_SESSION]


async def test_link_sends_the_first_secret_and_edges_accept_any_for_rotation(delivery_port):
    start, _ = delivery_port
    old, new = "old-" + "o" * 40, "new-" + "n" * 40
    address = await start(InternalAuth.from_config(Config(internal_secrets=[new, old])))
    for secrets in ([old], [new, old], [new]):
        link = GrpcEdgeLink(5.0, InternalAuth.from_config(Config(internal_secrets=secrets)))
        try:
            assert await link.deliver("edge-1", address, [routed()]) == [NO_SESSION]
        finally:
            await link.close()
    link = GrpcEdgeLink(5.0, InternalAuth.from_config(Config(internal_secrets=["retired-" + "r" * 40])))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await link.deliver("edge-1", address, [routed()])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await link.close()


async def test_mutual_tls_admits_only_certificates_of_the_internal_ca(delivery_port, pki):
    start, _ = delivery_port
    address = await start(InternalAuth.from_config(mtls_config(pki, "edge")))
    link = GrpcEdgeLink(
        5.0, InternalAuth.from_config(mtls_config(pki, "router", internal_tls_server_name="pushplat-edge"))
    )
    try:
        assert await link.deliver("edge-1", address, [routed()]) == [NO_SESSION]
        assert await link.evict("edge-1", address, delivery_pb2.EvictRequest(device_id="x", session_id="y")) is False
    finally:
        await link.close()
    intruders = {
        # The right CA, but the edge's certificate does not name 127.0.0.1: the router refuses it.
        "no server name": GrpcEdgeLink(3.0, InternalAuth.from_config(mtls_config(pki, "router"))),
        "plaintext": GrpcEdgeLink(3.0),
        "stranger's cert": GrpcEdgeLink(3.0, InternalAuth.from_config(mtls_config(pki, "other"))),
    }
    for name, intruder in intruders.items():
        try:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await intruder.deliver("edge-1", address, [routed()])
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, name
        finally:
            await intruder.close()
    # TLS without a client certificate never gets past the handshake either.
    creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem)
    async with grpc.aio.secure_channel(address, creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await delivery_pb2_grpc.DeliveryStub(channel).Deliver(delivery_pb2.DeliverRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_internal_tls_options_go_together_and_files_are_checked(pki, tmp_path: Path):
    with pytest.raises(CertificateError, match="missing --internal-ca"):
        InternalAuth.from_config(Config(internal_tls_cert=str(pki["edge"].cert), internal_tls_key=str(pki["edge"].key)))
    with pytest.raises(CertificateError, match="cannot read --internal-ca"):
        InternalAuth.from_config(
            Config(
                internal_tls_cert=str(pki["edge"].cert),
                internal_tls_key=str(pki["edge"].key),
                internal_ca=str(tmp_path / "missing-ca.crt"),
            )
        )
    assert InternalAuth.from_config(mtls_config(pki)).mechanisms == "mtls"
    assert InternalAuth.from_config(Config(internal_secrets=["short"])).weak_secret


def test_log_limiter_lets_one_line_per_interval_through_and_counts_the_rest():
    limiter = LogLimiter(3600.0)
    assert limiter.allow("k") == (True, 0)
    assert limiter.allow("k") == (False, 1)
    assert limiter.allow("k") == (False, 2)
    assert limiter.allow("other") == (True, 0)
    bounded = LogLimiter(3600.0, max_keys=2)
    for key in ("a", "b", "c"):
        bounded.allow(key)
    assert len(bounded._last) <= 2


@pytest.mark.parametrize("role", ["edge", "router"])
async def test_separate_edge_or_router_refuses_to_start_without_internal_auth(role):
    ports = ["--edge-port", "0", "--delivery-port", "0"] if role == "edge" else []
    code, out, err = await run(role, *ports, "--registry", "redis://127.0.0.1:1/0", "--queue", "kafka://127.0.0.1:1")
    lines = [line for line in err.splitlines() if line.startswith("pushplat ")]  # not the log lines
    assert code == 2, out + err
    assert len(lines) == 1 and lines[0].startswith(f"pushplat {role}: the delivery port needs internal auth"), err
    assert "--internal-secret" in lines[0] and "--insecure-internal" in lines[0]
    # With --insecure-internal it gets past that check (and on to the unreachable backends).
    code, out, err = await run(
        role, *ports, "--registry", "redis://127.0.0.1:1/0", "--queue", "kafka://127.0.0.1:1", "--insecure-internal"
    )
    assert code == 2 and "internal auth" not in err and "cannot" in err, err


async def test_bad_internal_tls_files_are_one_clear_startup_line(pki, tmp_path: Path):
    code, _, err = await run(
        "edge", "--edge-port", "0", "--delivery-port", "0", "--registry", "redis://127.0.0.1:1/0",
        "--internal-tls-cert", str(pki["edge"].cert), "--internal-tls-key", str(pki["router"].key),
        "--internal-ca", str(pki["ca"].cert),
    )  # fmt: skip
    assert code == 2 and "--internal-tls-key" in err and "is not the private key of --internal-tls-cert" in err, err
    assert len([line for line in err.splitlines() if line.startswith("pushplat ")]) == 1 and "Traceback" not in err


async def test_dev_hands_batches_to_its_edge_in_process_with_no_delivery_port(processes):
    server = await processes.dev()  # the harness still passes --delivery-port, as older scripts do
    delivery = int(server.args[server.args.index("--delivery-port") + 1])
    assert "event=dev.delivery_port_unused" in server.log()
    assert "internal_auth=in-process" in server.log()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", delivery), timeout=2).close()
    async with (
        PushClient(server.edge, device_id="inproc") as device,
        PushSender(server.api) as sender,
    ):
        await device.wait_connected(10)
        reply = await sender.send(device_id="inproc", payload=b"no port needed")
        assert (await asyncio.wait_for(anext(device), 10)).message_id == reply.message_id


async def test_metrics_listen_on_their_own_host(processes):
    port = free_port()
    await processes.dev("--metrics-port", str(port), "--metrics-host", "127.0.0.2")
    assert "pushplat_open_connections" in await asyncio.to_thread(scrape, port, "127.0.0.2")
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port, "127.0.0.1")
