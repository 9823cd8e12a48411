"""The `pushplat` command as a user runs it: real processes, real ports."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import pytest

from tests.helpers import eventually, free_port, require_env
from tests.processes import PUSHPLAT, Role, run

SECRET = "cli-test-secret-0123456789abcdef0123"


async def test_listen_prints_what_send_sends_and_exits_after_count(processes):
    server = await processes.dev()
    listener = await processes.client(
        "listen", "--edge", server.edge, "--user", "ann", "--device", "ann-1", "--count", "2"
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


async def test_token_auth_end_to_end_with_env_secret(processes):
    server = await processes.dev("--api-key", "k1", env={"PUSHPLAT_AUTH_SECRET": SECRET})
    code, token, err = await run(
        "token", "--user", "zoe", "--device", "zoe-tv", "--ttl", "120", env={"PUSHPLAT_AUTH_SECRET": SECRET}
    )
    assert code == 0, err
    listener = await processes.client("listen", "--edge", server.edge, "--token", token.strip(), "--count", "1")
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


async def test_listen_with_bad_token_fails_clearly(processes):
    server = await processes.dev("--auth-secret", SECRET)
    code, _out, err = await run("listen", "--edge", server.edge, "--token", "forged", "--count", "1")
    assert code == 1 and "UNAUTHENTICATED" in err and "invalid token" in err


async def test_token_without_secret_is_an_error(monkeypatch):
    monkeypatch.delenv("PUSHPLAT_AUTH_SECRET", raising=False)
    code, _, err = await run("token", "--user", "u", "--device", "d")
    assert code == 2 and "PUSHPLAT_AUTH_SECRET" in err


async def test_send_to_unreachable_api_fails_with_unavailable():
    code, out, err = await run("send", "--api", f"127.0.0.1:{free_port()}", "--device", "d", "x")
    assert code == 1 and "UNAVAILABLE" in err and out == ""


async def test_port_in_use_is_a_clear_startup_error(processes):
    server = await processes.dev()
    port = str(server.edge_port)
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


async def test_options_come_from_environment_variables(processes):
    def make() -> Role:
        edge = free_port()
        env = {
            "PUSHPLAT_EDGE_PORT": str(edge),
            "PUSHPLAT_API_PORT": str(free_port()),
            "PUSHPLAT_DELIVERY_PORT": str(free_port()),
        }
        return Role("dev", ["dev"], port=edge, env=env)  # up once the edge serves

    server = await processes.start_on_free_ports(make)
    returncode = await server.terminate(timeout=30)
    assert returncode == 0
    assert "event=server.stopped" in server.log()


async def test_status_and_presence(processes):
    server = await processes.dev()
    listener = await processes.client(
        "listen", "--edge", server.edge, "--user", "eve", "--device", "eve-1", "--count", "1"
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


async def test_admission_limits_are_command_line_options(processes):
    """--max-connections (and PUSHPLAT_MAX_CONNECTS_PER_SECOND) as the README documents them."""
    import grpc

    from tests.helpers import RawDevice

    server = await processes.dev("--max-connections", "1", env={"PUSHPLAT_MAX_CONNECTS_PER_SECOND": "50"})
    first, second = RawDevice(server.edge), RawDevice(server.edge)
    try:
        await first.hello(device_id="only-one")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await second.hello(device_id="one-too-many")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "connection limit" in info.value.details()
        assert dict(info.value.trailing_metadata())["retry-after-ms"].isdigit()
    finally:
        await first.close()
        await second.close()


async def test_client_commands_send_the_first_key_of_a_rotation_list(processes):
    """PUSHPLAT_API_KEY="K1,K2" configures the server with both keys; send, status and presence
    reading the same variable send K1, not the whole string."""
    keys = {"PUSHPLAT_API_KEY": "rot-key-1, rot-key-2"}
    server = await processes.dev(env=keys)
    code, out, err = await run("send", "--api", server.api, "--device", "d1", "hi", env=keys)
    assert code == 0, err
    message_id = json.loads(out)["message_id"]
    code, out, err = await run("status", "--api", server.api, message_id, env=keys)
    assert code == 0, err
    assert json.loads(out)["message_id"] == message_id
    code, out, err = await run("presence", "--api", server.api, "nobody", env=keys)
    assert code == 0 and json.loads(out)["user_id"] == "nobody", err
    # The second key of the list is a valid key too (rotation), given on its own.
    code, _, err = await run("send", "--api", server.api, "--api-key", "rot-key-2", "--device", "d1", "x")
    assert code == 0, err
    code, _, err = await run("send", "--api", server.api, "--api-key", "wrong", "--device", "d1", "x")
    assert code == 1 and "unknown API key" in err


@pytest.mark.parametrize("command,taken", [("dev", "edge"), ("dev", "api"), ("dev", "metrics"), ("edge", "delivery")])
async def test_every_port_in_use_is_one_clear_line_and_exit_2(command, taken):
    """A taken port of any kind: exit code 2 and one line naming the port and the option to change,
    no traceback and no event-loop noise after it. (Only a separate edge has a delivery port.)"""
    import socket

    extra = []
    if command == "edge":
        extra = ["--registry", require_env("PUSHPLAT_TEST_REDIS_URL"), "--insecure-internal"]
    names = ("edge", "api", "metrics") if command == "dev" else ("edge", "delivery", "metrics")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ports = {name: "0" for name in names}
        ports[taken] = str(port)
        args = [arg for name, value in ports.items() for arg in (f"--{name}-port", value)]
        code, out, err = await run(command, *args, *extra)
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"pushplat {command}: cannot listen on 127.0.0.1:{port} for {taken}: address already in use "
        f"(choose another --{taken}-port)"
    ], err
    assert out == ""


async def test_send_refuses_bad_arguments_with_one_line_and_exit_2():
    """Wrong arguments never reach the api and never end in a traceback."""
    for args, text in (
        (["--device", ""], "--device needs an id"),
        (["--user", "  "], "--user needs an id"),
        (["--device", "d", "--label", "no-equals-sign"], "argument --label: expected KEY=VALUE"),
        (["--device", "d", "--label", "=v"], "argument --label: expected KEY=VALUE"),
    ):
        code, out, err = await run("send", "--api", "127.0.0.1:1", *args, "payload")
        assert code == 2, (args, err)
        assert text in err and "Traceback" not in err, (args, err)
        assert out == ""


@pytest.mark.parametrize("command,value", [("dev", "-5"), ("edge", "-5"), ("edge", "99999999999")])
async def test_a_gc_young_objects_out_of_range_is_one_line_and_exit_2(command, value):
    code, out, err = await run(command, "--gc-young-objects", value)
    assert code == 2 and out == ""
    assert err.strip() == f"pushplat {command}: --gc-young-objects must be 0 to 10000000, got {value}", err


@pytest.mark.parametrize("value", ["-1", "0.5"])
async def test_a_memory_trim_interval_below_one_second_is_one_line_and_exit_2(value):
    code, out, err = await run("edge", "--memory-trim-seconds", value, "--edge-port", "0", "--delivery-port", "0")
    assert code == 2 and out == ""
    assert err.strip() == f"pushplat edge: --memory-trim-seconds must be 0 (off) or at least 1, got {value}", err


async def test_sigterm_while_starting_stops_at_once_with_one_line_and_exit_0(tmp_path):
    """A registry that accepts but never answers holds the start in its ping: SIGTERM then ends the
    start (there is nothing to drain yet), the process says so, and exits 0 without a traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        port = silent.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            *PUSHPLAT, "edge", "--registry", f"redis://127.0.0.1:{port}/0", "--insecure-internal",
            "--edge-port", "0", "--delivery-port", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            loop = asyncio.get_running_loop()
            conn, _ = await asyncio.wait_for(loop.sock_accept(silent), 30)  # the edge is in its ping
            with conn:
                proc.send_signal(signal.SIGTERM)
                # Within the ping's own retry budget (3 tries of 3 s): should the cancel be lost
                # (Python 3.11's wait_for can swallow one), the stop still comes when the ping ends.
                out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = err.decode()
    assert proc.returncode == 0 and out == b"", text
    assert "event=server.signal signal=SIGTERM" in text and "while starting" in text, text
    assert "Traceback" not in text and "event=server.started" not in text, text


# Every port at 0 first, so that a value let through binds nothing a neighbour uses.
FREE = {
    "dev": ("--edge-port", "0", "--api-port", "0", "--ws-port", "0"),
    "edge": ("--edge-port", "0", "--delivery-port", "0"),
}


@pytest.mark.parametrize(
    "command,flag,value,text",
    [
        ("dev", "--edge-port", "99999", "--edge-port must be 0 to 65535, got 99999"),  # gRPC bound it as 34463
        ("dev", "--api-port", "-1", "--api-port must be 0 to 65535, got -1"),
        ("dev", "--ws-port", "65536", "--ws-port must be 0 to 65535, got 65536"),
        ("dev", "--metrics-port", "70000", "--metrics-port must be 0 to 65535, got 70000"),  # was a traceback
        ("edge", "--delivery-port", "100000", "--delivery-port must be 0 to 65535, got 100000"),
        ("dev", "--drain-seconds", "-5", "--drain-seconds must be 0 or more, got -5"),
        ("dev", "--max-connections", "-3", "--max-connections must be 0 or more, got -3"),
        ("dev", "--max-age-jitter", "2", "--max-age-jitter is a share of --max-age-seconds: 0 to 1, got 2"),
        ("dev", "--log-level", "loud", "--log-level must be one of debug, info, warning, error, got 'loud'"),
        ("dev", "--drain-seconds", "nan", "--drain-seconds must be a finite number, got nan"),  # passes every <
        # inf seconds became an OverflowError where gRPC takes milliseconds
        ("edge", "--idle-connection-seconds", "inf", "--idle-connection-seconds must be a finite number, got inf"),
        ("dev", "--session-log-lines-per-second", "-1", "--session-log-lines-per-second must be 0 or more, got -1"),
    ],
)
async def test_an_option_out_of_range_is_one_line_and_exit_2(command, flag, value, text):
    """It started before: a port modulo 65536, a negative limit, any log level read as info."""
    code, out, err = await run(command, *FREE[command], flag, value)
    assert code == 2 and out == ""
    assert err.strip() == f"pushplat {command}: {text}", err


async def test_a_bad_environment_variable_is_one_line_and_exit_2_for_the_command_that_reads_it():
    code, out, err = await run("dev", *FREE["dev"], env={"PUSHPLAT_DRAIN_SECONDS": "soon"})
    assert code == 2 and out == ""
    assert err.strip() == "pushplat dev: PUSHPLAT_DRAIN_SECONDS='soon': not a number", err  # was a traceback
    # Another command does not read it, and carries on.
    code, out, err = await run(
        "token", "--user", "u", "--device", "d", env={"PUSHPLAT_DRAIN_SECONDS": "soon", "PUSHPLAT_AUTH_SECRET": SECRET}
    )
    assert code == 0 and out.count(".") == 2, err


async def test_a_short_secret_is_one_warning_line_of_ours(processes):
    """PyJWT's own warning named its source file, from `pushplat token` and at a server's first Hello."""
    code, token, err = await run("token", "--user", "u", "--device", "d", "--secret", "short")
    assert code == 0 and token.count(".") == 2
    assert err.strip() == "pushplat token: warning: the secret is under 32 bytes", err
    server = await processes.dev("--auth-secret", "short")
    await processes.client("listen", "--edge", server.edge, "--token", token.strip(), "--count", "1")
    await eventually(lambda: "event=session.open" in server.log(), 10, what="the device's session")
    assert "auth.weak_secret" in server.log()
    assert "HMAC key" not in server.log() and "Warning:" not in server.log(), server.log()


@pytest.mark.parametrize(
    "args,text",
    [
        (["dev", "--edge-port", "abc"], "pushplat dev: error: argument --edge-port: invalid int value: 'abc'"),
        (["dev", "--bogus"], "pushplat dev: error: unrecognized arguments: --bogus"),  # was blamed on `pushplat`
        (["edge", "--auth-secret"], "pushplat edge: error: argument --auth-secret: expected one argument"),
        (["send", "--user", "u"], "pushplat send: error: the following arguments are required: payload"),
    ],
)
async def test_a_wrong_argument_is_one_line_naming_the_command_and_exit_2(args, text):
    """Not 70 lines of `pushplat dev` usage above the one that says what is wrong."""
    code, out, err = await run(*args)
    assert code == 2 and out == ""
    assert err.strip() == f"{text} (see pushplat {args[0]} --help)", err
