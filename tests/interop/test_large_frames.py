"""Maximum-size payloads in a backlog, for every SDK, against a real `pushplat dev` (issue 10).

64 queued messages of 64 KiB once made a 4.2 MB PushBatch, over the 4 MB receive limit of gRPC
clients: the client got RESOURCE_EXHAUSTED, reconnected, and the inbox replayed the same batch,
forever. The edge now caps frames at --max-frame-bytes and announces it in Welcome, and each SDK
matches its receive limit to it: every message arrives whole, on one connection (or, when the
edge's frames are larger than gRPC's default limit, on the one reconnect that raises the limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator

import pytest
from pushplat_client import PushClient, PushSender

from tests.interop.conftest import EVENT_TIMEOUT, Platform, Program, Running, start_platform

pytestmark = pytest.mark.asyncio

MAX_PAYLOAD = 64 * 1024  # the default --max-payload-bytes
BACKLOG = 64
# Over gRPC's 4 MiB default receive limit: the edge's frame cap (payload + 8 KiB) is larger too.
BIG_PAYLOAD = 5 * 1024 * 1024
BIG_BACKLOG = 3


@pytest.fixture
def programs(go_program: Program, node_program: Program, java_program: Program) -> tuple[Program, ...]:
    return (go_program, node_program, java_program)


@pytest.fixture(scope="module")
def big_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`pushplat dev` taking 5 MiB payloads: its frames may be 5 MiB + 8 KiB (the default cap), and
    each device's queue holds a few of them."""
    queue = str(4 * (BIG_PAYLOAD + 8192))
    yield from start_platform(
        tmp_path_factory.mktemp("dev-big"), "--max-payload-bytes", str(BIG_PAYLOAD), "--session-queue-bytes", queue
    )


async def queue_backlog(api: str, devices: list[str], count: int, size: int) -> dict[str, list[tuple[str, str]]]:
    """count at-least-once messages of size random bytes for each (offline) device: their
    (message_id, sha256) in send order."""
    sent: dict[str, list[tuple[str, str]]] = {device: [] for device in devices}
    async with PushSender(api) as sender:
        for device in devices:
            for _ in range(count):
                payload = os.urandom(size)
                reply = await sender.send(device_id=device, payload=payload, at_least_once=True, ttl_seconds=300)
                sent[device].append((reply.message_id, hashlib.sha256(payload).hexdigest()))
    return sent


async def python_receives(platform: Platform, device: str, count: int) -> tuple[list[tuple[str, str]], int]:
    got: list[tuple[str, str]] = []
    async with PushClient(platform.edge, user_id=f"u-{device}", device_id=device) as client:
        async with asyncio.timeout(EVENT_TIMEOUT * 4):
            async for message in client:
                got.append((message.message_id, hashlib.sha256(message.payload).hexdigest()))
                if len(got) == count:
                    break
        return got, client.connects


async def program_receives(run_program, program: Program, platform: Platform, device: str, count: int) -> Running:
    args = program.listen_args(platform.edge, user=f"u-{device}", device=device, count=count)
    return await run_program(program, [*args, "--digest"])


async def backlog_arrives_whole(
    platform: Platform, run_program, programs: tuple[Program, ...], count: int, size: int, connects: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    devices = {program.name: f"{program.name}-{tag}" for program in programs}
    devices["python"] = f"python-{tag}"
    sent = await queue_backlog(platform.api, list(devices.values()), count, size)

    listeners = {p.name: await program_receives(run_program, p, platform, devices[p.name], count) for p in programs}
    py_got, py_connects = await python_receives(platform, devices["python"], count)
    assert py_got == sent[devices["python"]], "python: every message, whole, in order"
    assert py_connects == connects, f"python connected {py_connects} times"

    for name, listener in listeners.items():
        await listener.expect("connected", timeout=60)
        events = [await listener.expect("message", timeout=EVENT_TIMEOUT * 2) for _ in range(count)]
        assert await listener.finish() == 0, listener.events[-3:]
        got = [(e["message_id"], e["payload_sha256"]) for e in events]
        assert got == sent[devices[name]], f"{name}: every message, whole, in order"
        assert {e["payload_bytes"] for e in events} == {size}
        # No reconnect loop: one connection, or one more to raise the receive limit.
        assert {e["connects"] for e in events} == {connects}, (name, [e["connects"] for e in events])


async def test_a_backlog_of_maximum_size_payloads_reaches_every_sdk_on_one_connection(
    dev_platform: Platform, run_program, programs: tuple[Program, ...]
) -> None:
    """64 x 64 KiB queued while offline: 4 MiB in all, more than one frame may carry (1 MiB)."""
    await backlog_arrives_whole(dev_platform, run_program, programs, BACKLOG, MAX_PAYLOAD, connects=1)


async def test_frames_larger_than_grpcs_default_limit_raise_every_sdks_receive_limit(
    big_platform: Platform, run_program, programs: tuple[Program, ...]
) -> None:
    """5 MiB payloads: the Welcome announces frames of 5 MiB + 8 KiB; each SDK reconnects once
    with a receive limit to match, then gets the whole backlog."""
    await backlog_arrives_whole(big_platform, run_program, programs, BIG_BACKLOG, BIG_PAYLOAD, connects=2)
