"""TLS on the public ports (device and api), mutual TLS on the api, the plaintext health port,
and the SDK and CLI's TLS options, with certificates made at test time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushplat_client import TLS, PushClient, PushError, PushSender

from tests.certs import CA, Leaf
from tests.helpers import free_port
from tests.processes import Role, run


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CA | Leaf]:
    where = tmp_path_factory.mktemp("pki")
    ca, other = CA(where / "ca"), CA(where / "other", name="someone else's CA")
    return {
        "ca": ca,
        "server": ca.issue("server"),
        "client": ca.issue("backend"),
        "other": other,
        "other_client": other.issue("intruder"),
    }


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def tls_platform(start_platform, pki, **extra):
    return await start_platform(tls_cert=str(pki["server"].cert), tls_key=str(pki["server"].key), **extra)


async def test_tls_device_and_sender_end_to_end(start_platform, pki):
    platform = await tls_platform(start_platform, pki)
    tls = TLS(ca=pki["ca"].cert)  # a path; PEM bytes work too
    async with (
        PushClient(addr(platform.ports.edge), user_id="tina", device_id="tina-1", tls=tls) as device,
        PushSender(addr(platform.ports.api), tls=TLS(ca=pki["ca"].cert_pem)) as sender,
    ):
        await device.wait_connected(10)
        reply = await sender.send(device_id="tina-1", payload=b"over TLS")
        message = await asyncio.wait_for(anext(device), 10)
        assert (message.message_id, message.payload) == (reply.message_id, b"over TLS")
        status = await sender.get_status(reply.message_id)
        assert status.message_id == reply.message_id


async def test_plaintext_client_is_refused_by_a_tls_port(start_platform, pki):
    platform = await tls_platform(start_platform, pki)
    with pytest.raises(PushError) as info:
        async with PushSender(addr(platform.ports.api)) as sender:
            await sender.send(device_id="d", payload=b"plaintext", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.insecure_channel(addr(platform.ports.edge)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert raw.value.code() == grpc.StatusCode.UNAVAILABLE
    # ...and the port still serves TLS clients.
    async with PushSender(addr(platform.ports.api), tls=TLS(ca=pki["ca"].cert)) as sender:
        assert (await sender.send(device_id="d", payload=b"tls")).message_id


async def test_server_certificate_from_another_ca_is_refused(start_platform, pki):
    platform = await tls_platform(start_platform, pki)
    wrong = TLS(ca=pki["other"].cert)
    with pytest.raises(PushError) as info:
        async with PushSender(addr(platform.ports.api), tls=wrong) as sender:
            await sender.send(device_id="d", payload=b"x", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    client = PushClient(addr(platform.ports.edge), device_id="d", tls=wrong, reconnect=False)
    with pytest.raises(PushError) as info:
        async with client:
            await anext(client)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_api_requires_a_client_certificate_from_its_ca(start_platform, pki):
    platform = await tls_platform(start_platform, pki, api_tls_client_ca=str(pki["ca"].cert))
    api = addr(platform.ports.api)
    for tls in (
        TLS(ca=pki["ca"].cert),  # no client certificate
        TLS(ca=pki["ca"].cert, cert=pki["other_client"].cert, key=pki["other_client"].key),  # wrong CA
    ):
        with pytest.raises(PushError) as info:
            async with PushSender(api, tls=tls) as sender:
                await sender.send(device_id="m-1", payload=b"refused", timeout=5)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE, tls
    good = TLS(ca=pki["ca"].cert, cert=pki["client"].cert, key=pki["client"].key)
    # Mutual TLS is the api's alone: devices still connect with server-side TLS.
    async with (
        PushClient(addr(platform.ports.edge), device_id="m-1", tls=TLS(ca=pki["ca"].cert)) as device,
        PushSender(api, tls=good) as sender,
    ):
        await device.wait_connected(10)
        reply = await sender.send(device_id="m-1", payload=b"mtls")
        assert (await asyncio.wait_for(anext(device), 10)).message_id == reply.message_id


async def test_health_port_answers_in_plaintext_beside_tls_ports(start_platform, pki):
    platform = await tls_platform(start_platform, pki, health_port=free_port())
    async with grpc.aio.insecure_channel(addr(platform.ports.health)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pushplat.v1.Edge", "pushplat.v1.Push"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        # Health only: the services themselves are not on the plaintext port.
        push = channel.unary_unary("/pushplat.v1.Push/Send")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await push(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tls_settings_check_their_inputs(tmp_path: Path, pki):
    with pytest.raises(ValueError, match="cannot read ca file"):
        TLS(ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="needs both cert and key"):
        TLS(cert=pki["client"].cert)
    assert "BEGIN" not in repr(TLS(ca=pki["ca"].cert, cert=pki["client"].cert, key=pki["client"].key))


# -- the command line ---------------------------------------------------------------------


async def test_cli_over_tls_listen_send_status_presence_and_system_roots(processes, pki):
    ca = str(pki["ca"].cert)

    def make() -> Role:
        edge, api, health = free_port(), free_port(), free_port()
        args = ["dev", "--edge-port", str(edge), "--api-port", str(api), "--health-port", str(health)]
        args += ["--tls-cert", str(pki["server"].cert), "--tls-key", str(pki["server"].key)]
        role = Role("dev-tls", args, port=health)  # up once the plaintext health port serves
        role.edge, role.api = addr(edge), addr(api)  # type: ignore[attr-defined]
        return role

    server = await processes.start_on_free_ports(make)
    listener = await processes.client(
        "listen", "--edge", server.edge, "--device", "cli-tls", "--tls-ca", ca, "--count", "1"
    )
    # The listener connects in the background: send until it prints (bounded).
    line = b""
    for _ in range(40):
        code, out, err = await run("send", "--api", server.api, "--device", "cli-tls", "--tls-ca", ca, "hello tls")
        assert code == 0, err
        try:
            line = await asyncio.wait_for(listener.stdout.readline(), 0.5)
            break
        except TimeoutError:
            continue
    assert json.loads(line)["payload"] == "hello tls"
    message_id = json.loads(out)["message_id"]

    code, out, err = await run("status", "--api", server.api, "--tls-ca", ca, message_id)
    assert code == 0 and json.loads(out)["message_id"] == message_id, err
    code, out, err = await run("presence", "--api", server.api, "--tls-ca", ca, "nobody")
    assert code == 0 and json.loads(out)["user_id"] == "nobody", err
    # --tls checks against the default roots; gRPC reads them from this variable when it is set.
    code, out, err = await run(
        "send", "--api", server.api, "--device", "x", "--tls", "roots", env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": ca}
    )
    assert code == 0 and json.loads(out)["message_id"], err
    code, out, err = await run("send", "--api", server.api, "--device", "x", "plaintext")
    assert code == 1 and "UNAVAILABLE" in err
    code, out, err = await run("send", "--api", server.api, "--device", "x", "--tls-ca", str(pki["other"].cert), "w")
    assert code == 1 and "UNAVAILABLE" in err


async def test_client_commands_reject_unreadable_tls_files(tmp_path: Path):
    missing = str(tmp_path / "nope.pem")
    for command in (["send", "--device", "d", "x"], ["listen", "--device", "d"], ["status", "m"], ["presence", "u"]):
        code, _out, err = await run(*command, "--tls-ca", missing)
        assert code == 2 and "cannot read ca file" in err and len(err.strip().splitlines()) == 1, (command, err)
    code, _, err = await run("send", "--device", "d", "--tls-client-cert", missing, "x")
    assert code == 2 and "--tls-client-cert and --tls-client-key go together" in err


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot read --tls-cert"),
        (["--tls-cert", "{cert}"], "--tls-cert needs --tls-key"),
        (["--tls-cert", "{cert}", "--tls-key", "{other_key}"], "is not the private key of --tls-cert"),
        (["--tls-cert", "{ca_dir}", "--tls-key", "{key}"], "cannot read --tls-cert"),
        (["--tls-cert", "{garbage}", "--tls-key", "{garbage}"], "not a PEM certificate and key"),
        (["--api-tls-client-ca", "{ca}"], "--api-tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", "{cert}", "--tls-key", "{key}", "--api-tls-client-ca", "{garbage}"], "no PEM CA certificate"),
    ],
    ids=["unreadable", "no-key", "key-mismatch", "directory", "not-pem", "client-ca-alone", "bad-client-ca"],
)
async def test_bad_tls_files_are_one_clear_startup_line(pki, tmp_path: Path, flags, text):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    values = {
        "missing": str(tmp_path / "missing.crt"),
        "cert": str(pki["server"].cert),
        "key": str(pki["server"].key),
        "other_key": str(pki["client"].key),
        "ca": str(pki["ca"].cert),
        "ca_dir": str(pki["ca"].dir),
        "garbage": str(garbage),
    }
    args = ["dev", "--edge-port", "0", "--api-port", "0", *[f.format(**values) for f in flags]]
    code, out, err = await run(*args)
    lines = [line for line in err.splitlines() if line.startswith("pushplat dev:")]
    assert code == 2, out + err
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err
