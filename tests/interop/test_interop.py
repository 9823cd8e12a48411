"""The Go, Node and Java SDKs against a real `pushplat dev`, beside the Python SDK.

A Go device, a Node device, a Java device and a Python device of one user all receive what a
Python backend sends; a Go, a Node and a Java backend send and every device receives. The same
again with auth on: every SDK presents a token minted by `pushplat token`, every backend the
API key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from pushplat_client import TLS, PushClient, PushSender
from pushplat_client.v1 import push_pb2, push_pb2_grpc

from tests.helpers import eventually
from tests.interop.conftest import (
    API_KEY,
    EVENT_TIMEOUT,
    Platform,
    Program,
    Running,
    TlsFiles,
    mint_token,
)

pytestmark = pytest.mark.asyncio

Start = Callable[[Program, list[str]], Awaitable[Running]]
# Each other-language backend sends at its own priority, so a mix-up would show.
PRIORITIES = ("low", "normal", "high")
PRIORITY_VALUES = {"low": 1, "normal": 2, "high": 3}


@pytest.fixture
def programs(go_program: Program, node_program: Program, java_program: Program) -> tuple[Program, ...]:
    return (go_program, node_program, java_program)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def python_receives(client: PushClient) -> Any:
    return await asyncio.wait_for(anext(client), EVENT_TIMEOUT)


def send_args(
    api: str, *, user: str, payload: str, priority: str, label: str, api_key: str = "", tls: TlsFiles | None = None
) -> list[str]:
    args = ["send", "--api", api, "--user", user, "--priority", priority, "--label", label]
    if api_key:
        args += ["--api-key", api_key]
    if tls is not None:
        args += ["--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key]
    return [*args, payload]


async def fan_out_scenario(
    platform: Platform,
    run_program: Start,
    programs: tuple[Program, ...],
    *,
    tokens: dict[str, str] | None = None,
    api_key: str = "",
    tls: TlsFiles | None = None,
) -> None:
    user = unique("user")
    devices = {program.name: unique(f"{program.name}-dev") for program in programs}
    devices["python"] = unique("py-dev")
    if tokens is not None:
        tokens.update({lang: mint_token(user, device) for lang, device in devices.items()})

    def identity(lang: str) -> dict[str, str]:
        if tokens is not None:
            return {"token": tokens[lang]}
        return {"user": user, "device": devices[lang]}

    # Every device gets the Python backend's message and one from each other backend.
    count = 1 + len(programs)
    tls_args = ["--tls-ca", tls.ca] if tls else []
    listeners = [
        await run_program(
            program, [*program.listen_args(platform.edge, count=count, **identity(program.name)), *tls_args]
        )
        for program in programs
    ]
    py_kwargs: dict[str, Any] = (
        {"token": tokens["python"]} if tokens is not None else {"user_id": user, "device_id": devices["python"]}
    )
    device_tls = TLS(ca=tls.ca) if tls else None
    sender_tls = TLS(ca=tls.ca, cert=tls.cert, key=tls.key) if tls else None
    async with (
        PushClient(platform.edge, tls=device_tls, **py_kwargs) as py_dev,
        PushSender(platform.api, api_key=api_key or None, tls=sender_tls) as py_api,
    ):
        await py_dev.wait_connected(EVENT_TIMEOUT)
        for dev in listeners:
            hello = await dev.expect("connected", timeout=30)
            assert hello["session_id"], hello

        # 1. A Python backend sends; every device receives the same message.
        sent = await py_api.send(user_id=user, payload="from-python", priority="high", labels={"lang": "python"})
        got = await python_receives(py_dev)
        assert (got.message_id, got.payload, got.priority, dict(got.labels)) == (
            sent.message_id,
            b"from-python",
            3,
            {"lang": "python"},
        )
        for dev in listeners:
            event = await dev.expect("message")
            assert event["message_id"] == sent.message_id, (dev.name, event)
            assert (event["payload"], event["priority"], event["labels"]) == ("from-python", "high", {"lang": "python"})

        # 2. The Go, Node and Java backends send in turn; the Python device (and the others) receive.
        for backend, priority in zip(programs, PRIORITIES, strict=True):
            payload = f"from-{backend.name}"
            sender = await run_program(
                backend,
                send_args(
                    platform.api,
                    user=user,
                    payload=payload,
                    priority=priority,
                    label=f"lang={backend.name}",
                    api_key=api_key,
                    tls=tls,
                ),
            )
            result = await sender.expect("sent", timeout=30)
            assert await sender.finish() == 0
            message_id = result["message_id"]
            assert message_id and result["duplicate"] is False

            got = await python_receives(py_dev)
            assert (got.message_id, got.payload, dict(got.labels)) == (
                message_id,
                payload.encode(),
                {"lang": backend.name},
            )
            assert got.priority == PRIORITY_VALUES[priority]
            for dev in listeners:
                event = await dev.expect("message")
                assert (event["message_id"], event["payload"], event["priority"]) == (message_id, payload, priority), (
                    dev.name,
                    event,
                )
                assert event["labels"] == {"lang": backend.name}, (dev.name, event)

        # Each listener exits by itself after its messages; one session throughout.
        for dev in listeners:
            assert await dev.finish() == 0, dev.events
            assert {e["connects"] for e in dev.events if e["event"] == "message"} == {1}, dev.events


async def test_devices_and_backends_in_four_languages(
    dev_platform: Platform, run_program: Start, programs: tuple[Program, ...]
) -> None:
    await fan_out_scenario(dev_platform, run_program, programs)


async def test_with_auth_tokens_and_api_key(
    auth_dev_platform: Platform, run_program: Start, programs: tuple[Program, ...]
) -> None:
    await fan_out_scenario(auth_dev_platform, run_program, programs, tokens={}, api_key=API_KEY)


async def test_over_tls_with_mutual_tls_backends(
    tls_dev_platform: tuple[Platform, TlsFiles], run_program: Start, programs: tuple[Program, ...]
) -> None:
    """Every SDK's device checks the edge's certificate against the test CA; every SDK's sender
    also presents a client certificate to the api, which requires one."""
    platform, tls = tls_dev_platform
    await fan_out_scenario(platform, run_program, programs, tls=tls)
    # Without its client certificate a sender does not get past the api's handshake.
    for program in programs:
        args = ["send", "--api", platform.api, "--device", "d", "--tls-ca", tls.ca, "x"]
        running = await run_program(program, args)
        event = await running.expect("error", timeout=30)
        assert event["code"] == "UNAVAILABLE", (program.name, event)


async def test_auth_failures_surface_as_errors(
    auth_dev_platform: Platform, run_program: Start, programs: tuple[Program, ...]
) -> None:
    """UNAUTHENTICATED is not retried: a bad token or API key ends the program with the error."""
    user = unique("user")
    forged = mint_token(user, "dev-1", secret="not-the-platform-secret-0123456789abcdef")
    checks: list[tuple[Running, str]] = []
    for program in programs:
        checks.append((await run_program(program, program.listen_args(auth_dev_platform.edge, token=forged)), "listen"))
        checks.append(
            (
                await run_program(
                    program, send_args(auth_dev_platform.api, user=user, payload="x", priority="high", label="a=b")
                ),
                "no key",
            )
        )
        checks.append(
            (
                await run_program(
                    program,
                    send_args(
                        auth_dev_platform.api, user=user, payload="x", priority="high", label="a=b", api_key="wrong-key"
                    ),
                ),
                "wrong key",
            )
        )
    for running, what in checks:
        event = await running.expect("error", timeout=30)
        assert event["code"] == "UNAUTHENTICATED", (running.name, what, event)
        assert await running.finish() == 1, (running.name, what)


async def test_at_least_once_is_replayed_on_connect_and_acked(
    dev_platform: Platform, run_program: Start, programs: tuple[Program, ...]
) -> None:
    """Sent while the devices are offline, kept in their inboxes, replayed when the Go, Node and
    Java devices connect, and acked by the SDKs as they hand the messages over."""
    user = unique("user")
    devices = {program.name: unique(f"{program.name}-dev") for program in programs}
    async with PushSender(dev_platform.api) as api:
        sent = {
            name: (
                await api.send(device_id=device, payload=f"stored-for-{name}", at_least_once=True, ttl_seconds=60)
            ).message_id
            for name, device in devices.items()
        }
    listeners = [
        await run_program(program, program.listen_args(dev_platform.edge, user=user, device=devices[program.name]))
        for program in programs
    ]
    for program, listener in zip(programs, listeners, strict=True):
        await listener.expect("connected", timeout=30)
        event = await listener.expect("message")
        assert (event["message_id"], event["payload"], event["requires_ack"]) == (
            sent[program.name],
            f"stored-for-{program.name}",
            True,
        ), event
        assert await listener.finish() == 0, listener.events

    # Each SDK acked what it handed over (and flushed the ack on close): the platform says so.
    async with grpc.aio.insecure_channel(dev_platform.api) as channel:
        stub = push_pb2_grpc.PushStub(channel)
        for name, device in devices.items():

            async def acked(name: str = name, device: str = device) -> bool:
                reply = await stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent[name]), timeout=5)
                return any(d.device_id == device and d.state == push_pb2.DELIVERY_STATE_ACKED for d in reply.devices)

            await eventually(acked, EVENT_TIMEOUT, what=f"the {name} device's ack of {sent[name]}")
