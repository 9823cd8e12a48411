"""The `pushplat` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from tests.helpers import eventually, free_port

SECRET = "cli-test-secret-0123456789abcdef0123"
PUSHPLAT = [sys.executable, "-m", "pushplat"]


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *PUSHPLAT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


class DevServer:
    def __init__(self, proc: asyncio.subprocess.Process, edge: str, api: str) -> None:
        self.proc, self.edge, self.api = proc, edge, api


async def wait_serving(port: int, timeout: float = 20) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def ok() -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    await eventually(ok, timeout, what=f"a server on port {port}")


@pytest.fixture
async def dev_server() -> AsyncIterator[callable]:
    started: list[asyncio.subprocess.Process] = []

    async def start(*extra: str, env: dict[str, str] | None = None) -> DevServer:
        edge, api, delivery = free_port(), free_port(), free_port()
        proc = await asyncio.create_subprocess_exec(
            *PUSHPLAT,
            "dev",
            "--edge-port",
            str(edge),
            "--api-port",
            str(api),
            "--delivery-port",
            str(delivery),
            *extra,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        started.append(proc)
        await wait_serving(edge)
        await wait_serving(api)
        return DevServer(proc, f"127.0.0.1:{edge}", f"127.0.0.1:{api}")

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()


async def test_listen_prints_what_send_sends_and_exits_after_count(dev_server):
    server = await dev_server()
    listener = await asyncio.create_subprocess_exec(
        *PUSHPLAT,
        "listen",
        "--edge",
        server.edge,
        "--user",
        "ann",
        "--device",
        "ann-1",
        "--count",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def sent(payload: str, *flags: str) -> dict:
        code, out, err = await run("send", "--api", server.api, "--user", "ann", *flags, payload)
        assert code == 0, err
        return json.loads(out)

    # The listener may not be connected yet: keep sending until its first line shows up.
    line = None
    for _ in range(40):
        reply = await sent("héllo")
        try:
            line = await asyncio.wait_for(listener.stdout.readline(), 0.5)
            break
        except TimeoutError:
            continue
    assert line, "listen printed nothing"
    received = json.loads(line)
    assert received["payload"] == "héllo" and received["priority"] == "normal"
    assert received["created_at_ms"] > 0 and received["message_id"]

    second = await sent("urgent", "--priority", "high", "--ttl", "60", "--collapse-key", "k")
    out, err = await asyncio.wait_for(listener.communicate(), 20)
    lines = [json.loads(x) for x in out.decode().splitlines()]
    # Earlier retries may have queued extra copies; the last line is the high message.
    assert lines[-1]["message_id"] == second["message_id"]
    assert lines[-1]["priority"] == "high" and lines[-1]["collapse_key"] == "k"
    assert listener.returncode == 0, err.decode()
    assert reply["message_id"]


async def test_token_auth_end_to_end_with_env_secret(dev_server):
    server = await dev_server("--api-key", "k1", env={"PUSHPLAT_AUTH_SECRET": SECRET})
    code, token, err = await run(
        "token", "--user", "zoe", "--device", "zoe-tv", "--ttl", "120", env={"PUSHPLAT_AUTH_SECRET": SECRET}
    )
    assert code == 0, err
    listener = await asyncio.create_subprocess_exec(
        *PUSHPLAT,
        "listen",
        "--edge",
        server.edge,
        "--token",
        token.strip(),
        "--count",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    code, out, err = await run("send", "--api", server.api, "--user", "zoe", "nokey")
    assert code == 1 and "UNAUTHENTICATED" in err and "missing API key" in err
    for _ in range(40):
        code, out, err = await run("send", "--api", server.api, "--api-key", "k1", "--user", "zoe", "hi zoe")
        assert code == 0, err
        try:
            await asyncio.wait_for(asyncio.shield(listener.wait()), 0.5)
            break
        except TimeoutError:
            continue
    out, _ = await listener.communicate()
    assert json.loads(out.decode().splitlines()[0])["payload"] == "hi zoe"


async def test_listen_with_bad_token_fails_clearly(dev_server):
    server = await dev_server("--auth-secret", SECRET)
    code, _out, err = await run("listen", "--edge", server.edge, "--token", "forged", "--count", "1")
    assert code == 1 and "UNAUTHENTICATED" in err and "invalid token" in err


async def test_token_without_secret_is_an_error(monkeypatch):
    monkeypatch.delenv("PUSHPLAT_AUTH_SECRET", raising=False)
    code, _, err = await run("token", "--user", "u", "--device", "d")
    assert code == 2 and "PUSHPLAT_AUTH_SECRET" in err


async def test_send_to_unreachable_api_fails_with_unavailable():
    code, out, err = await run("send", "--api", f"127.0.0.1:{free_port()}", "--device", "d", "x")
    assert code == 1 and "UNAVAILABLE" in err and out == ""


async def test_port_in_use_is_a_clear_startup_error(dev_server):
    server = await dev_server()
    port = server.edge.rsplit(":", 1)[1]
    code, _out, err = await run("dev", "--edge-port", port, "--api-port", "0", "--delivery-port", "0")
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err


@pytest.mark.parametrize("command", ["dev", "api", "router", "edge", "send", "listen", "token", "status", "presence"])
async def test_every_command_explains_its_options(command):
    code, out, _ = await run(command, "--help")
    assert code == 0 and "usage: pushplat" in out
    from pushplat.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    for action in subparsers.choices[command]._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help text"
        for flag in action.option_strings:
            assert flag in out
    if command in ("dev", "api", "router", "edge"):
        assert "[env PUSHPLAT_HOST; default 127.0.0.1]" in " ".join(out.split())


async def test_options_come_from_environment_variables(dev_server):
    edge = free_port()
    env = {
        "PUSHPLAT_EDGE_PORT": str(edge),
        "PUSHPLAT_API_PORT": str(free_port()),
        "PUSHPLAT_DELIVERY_PORT": str(free_port()),
    }
    proc = await asyncio.create_subprocess_exec(
        *PUSHPLAT, "dev", env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_serving(edge)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert "event=server.stopped" in err.decode()


async def test_status_and_presence(dev_server):
    server = await dev_server()
    listener = await asyncio.create_subprocess_exec(
        *PUSHPLAT,
        "listen",
        "--edge",
        server.edge,
        "--user",
        "eve",
        "--device",
        "eve-1",
        "--count",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def online() -> bool:
        code, out, _ = await run("presence", "--api", server.api, "eve")
        return code == 0 and [d["device_id"] for d in json.loads(out)["devices"]] == ["eve-1"]

    await eventually(online, 20, what="eve-1 to show up in presence")
    code, out, err = await run("send", "--api", server.api, "--user", "eve", "--at-least-once", "--label", "ab=x", "hi")
    message_id = json.loads(out)["message_id"]
    await asyncio.wait_for(listener.communicate(), 20)

    async def acked() -> bool:
        code, out, _ = await run("status", "--api", server.api, message_id)
        devices = json.loads(out)["devices"] if code == 0 else []
        return any(d["device_id"] == "eve-1" and d["state"] == "DELIVERY_STATE_ACKED" for d in devices)

    await eventually(acked, 20, what="the ack to show in status")
    code, out, err = await run("status", "--api", server.api, "missing-id")
    assert code == 1 and "NOT_FOUND" in err
