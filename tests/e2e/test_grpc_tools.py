"""Third-party gRPC tools against a running `pushplat dev`, as a user would point them at it:
grpcurl (reflection: list, describe a method, unary Push.Send, a bidi Edge.Connect from stdin)
and grpc-health-probe on every port. scripts/go-tools builds both at pinned versions, once."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Api, eventually
from tests.interop.conftest import require_tools
from tests.processes import DevServer, ProcessGroup

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 30


@pytest.fixture(scope="session")
def go_tools() -> dict[str, str]:
    """NAME -> path of grpcurl and grpc-health-probe (a missing Go fails in CI, skips elsewhere)."""
    require_tools("go")
    result = subprocess.run(
        [str(ROOT / "scripts" / "go-tools")], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, f"scripts/go-tools failed:\n{result.stderr[-4000:]}"
    return dict(line.split("=", 1) for line in result.stdout.split())


async def tool(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def dev(processes: ProcessGroup) -> DevServer:
    return await processes.dev()


def ports(dev: DevServer) -> dict[str, int]:
    # pushplat dev has no delivery port (its router hands batches to its edge in process).
    return {"pushplat.v1.Edge": dev.edge_port, "pushplat.v1.Push": dev.api_port}


async def test_grpcurl_lists_and_describes_services_and_methods(go_tools, dev):
    grpcurl = go_tools["grpcurl"]
    for service, port in ports(dev).items():
        code, out, err = await tool(grpcurl, "-plaintext", f"127.0.0.1:{port}", "list")
        assert code == 0, err
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(out.split())
        code, out, err = await tool(grpcurl, "-plaintext", f"127.0.0.1:{port}", "list", service)
        assert code == 0 and out.split(), err
        for method in out.split():  # every method of every service resolves by its full name
            code, described, err = await tool(grpcurl, "-plaintext", f"127.0.0.1:{port}", "describe", method)
            assert code == 0, f"describe {method}: {err}"
            assert f"{method} is a method" in described and f"rpc {method.rsplit('.', 1)[1]} (" in described
    code, out, err = await tool(grpcurl, "-plaintext", dev.api, "describe", "pushplat.v1.Push.Send")
    assert code == 0 and "rpc Send ( .pushplat.v1.SendRequest ) returns ( .pushplat.v1.SendResponse );" in out, err
    code, out, err = await tool(grpcurl, "-plaintext", dev.api, "describe", "pushplat.v1.Push.NoSuchMethod")
    assert code != 0 and "Symbol not found" in err


async def test_grpcurl_calls_push_send(go_tools, dev):
    request = json.dumps({"device_id": "curl-1", "payload": "aGk=", "priority": "PRIORITY_HIGH"})
    code, out, err = await tool(go_tools["grpcurl"], "-plaintext", "-d", request, dev.api, "pushplat.v1.Push/Send")
    assert code == 0, err
    assert json.loads(out)["message_id"]
    code, _, err = await tool(go_tools["grpcurl"], "-plaintext", "-d", "{}", dev.api, "pushplat.v1.Push/Send")
    assert code != 0 and "InvalidArgument" in err and "target is required" in err


async def read_json(stream: asyncio.StreamReader) -> dict:
    """One JSON object from grpcurl's output (it prints each response as indented JSON)."""
    text = ""
    async with asyncio.timeout(TIMEOUT):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"grpcurl output ended; so far {text!r}"
            text += line
            if line.rstrip() == "}":
                return json.loads(text)


async def test_grpcurl_holds_a_bidi_edge_connect_from_stdin(go_tools, dev):
    """A device spoken by hand: Hello from stdin, Welcome back, a push arrives, the ack goes in."""
    proc = await asyncio.create_subprocess_exec(
        go_tools["grpcurl"], "-plaintext", "-d", "@", dev.edge, "pushplat.v1.Edge/Connect",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    api = Api(dev.api)
    try:
        proc.stdin.write(json.dumps({"hello": {"user_id": "curl-user", "device_id": "curl-dev"}}).encode() + b"\n")
        await proc.stdin.drain()
        welcome = await read_json(proc.stdout)
        assert welcome["welcome"]["session_id"], welcome
        sent = await api.send(device_id="curl-dev", payload=b"to grpcurl", delivery=1, ttl_seconds=60)
        pushed = await read_json(proc.stdout)
        [message] = pushed["pushes"]["messages"]
        assert message["message_id"] == sent.message_id and message["requires_ack"] is True
        proc.stdin.write(json.dumps({"ack": {"message_ids": [sent.message_id]}}).encode() + b"\n")
        await proc.stdin.drain()

        async def acked() -> bool:
            from pushplat_client.v1 import push_pb2

            reply = await api.stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent.message_id), timeout=5)
            return any(d.state == push_pb2.DELIVERY_STATE_ACKED for d in reply.devices)

        await eventually(acked, TIMEOUT, what="the ack typed into grpcurl to reach the platform")
        proc.stdin.close()  # half-close: the edge ends the stream and grpcurl exits cleanly
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0, (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await api.close()


async def test_grpc_health_probe_on_every_port(go_tools, dev):
    probe = go_tools["grpc-health-probe"]
    for service, port in ports(dev).items():
        for name in ("", service):
            code, out, err = await tool(probe, "-addr", f"127.0.0.1:{port}", "-service", name, "-connect-timeout", "5s")
            assert code == 0 and "SERVING" in out + err, (port, name, out, err)
        code, _, err = await tool(probe, "-addr", f"127.0.0.1:{port}", "-service", "pushplat.v1.Nope")
        assert code != 0, (port, err)
