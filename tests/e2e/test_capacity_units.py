"""The per-unit Redis figures of the README's capacity model, counted on a real deployment (api,
router and edge processes on Redis + Kafka) with Redis's own INFO commandstats: a registry
refresh costs 2 Redis calls per connected device every ttl/3, and an at-most-once message to a
connected device about 4 (the router's lookup and one status write per role). A change that
adds a round trip per device or per message fails here, and the README's model with it."""

from __future__ import annotations

import asyncio
import time

import pytest
from pushplat_client import PushSender
from redis.asyncio import Redis

from tests.helpers import RawDevice, eventually, require_env

pytestmark = pytest.mark.timeout(180)

DEVICES = 100
MESSAGES = 400
CYCLES = 5  # refresh cycles per measured window
QUIET = 0.2  # seconds without a call: a refresh (every second here) is over


async def command_calls(client: Redis) -> dict[str, int]:
    stats = await client.info("commandstats")
    # Our own INFO calls are not the platform's.
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items() if k != "cmdstat_info"}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def scripted(calls: dict[str, int]) -> dict[str, int]:
    # GETs are the edge's own cheap checks of its key, which run between refreshes too.
    return {k: n for k, n in calls.items() if k != "get"}


async def wait_cycles(client: Redis, start: dict[str, int], cycles: int) -> dict[str, int]:
    """Commandstats once the edge has run `cycles` more refreshes since `start`, to the end.
    Each begins with one SET of the edge's own key (nothing else here SETs: no idempotency
    keys) and is over once Redis has been quiet for QUIET seconds, so a window between two of
    these holds whole cycles, whatever their timing."""
    polls: list[tuple[float, dict[str, int]]] = []

    async def done() -> bool:
        now, calls = time.monotonic(), await command_calls(client)
        polls.append((now, calls))
        quiet = [c for t, c in polls if now - t >= QUIET]
        settled = bool(quiet) and scripted(quiet[-1]) == scripted(calls)
        return calls.get("set", 0) - start.get("set", 0) >= cycles and settled

    await eventually(done, timeout=30, what=f"{cycles} registry refresh cycles")
    return polls[-1][1]


async def test_redis_calls_per_refresh_and_per_message(deployment):
    client = Redis.from_url(require_env("PUSHPLAT_TEST_REDIS_URL"))
    devices: list[RawDevice] = []
    try:
        api = await deployment.api()
        await deployment.router()
        edge = await deployment.edge("--registry-ttl-seconds", "3")  # a refresh every second
        devices = [RawDevice(edge.address) for _ in range(DEVICES)]
        for i, device in enumerate(devices):
            await device.hello(user_id=f"u{i}", device_id=f"d{i}")
        async with PushSender(api.address) as sender:
            await sender.send(device_id="d0", payload=b"warm-up")  # the router's group has joined
            await devices[0].read_messages(1)

            # Idle: the edge's refreshes (and any fixed per-edge polling) are all that runs.
            # Window from one cycle's SET to a later one: whole cycles, whatever their timing.
            start = await wait_cycles(client, await command_calls(client), 1)
            end = await wait_cycles(client, start, CYCLES)
            idle = delta(end, start)
            per_cycle = sum(idle.values()) / CYCLES
            per_device = per_cycle / DEVICES
            print(f"registry refresh: {per_device:.2f} Redis calls per device per refresh; {idle}")
            # REFRESH + INDEX_ADD per device, plus the edge's own key and checks spread thin.
            assert 1.9 <= per_device <= 2.3, idle

            before = await command_calls(client)
            sent = await asyncio.gather(
                *(sender.send(device_id=f"d{i % DEVICES}", payload=b"x") for i in range(MESSAGES))
            )
            await asyncio.gather(*(d.read_messages(MESSAGES // DEVICES) for d in devices))

            async def last_acked() -> bool:  # every role's receipt flush (50 ms) is in
                status = await sender.get_status(sent[-1].message_id)
                return [d.state for d in status.devices] == [3]  # ACKED

            await eventually(last_acked, timeout=10, what="the last message's ACKED status")
            # Close the window at a cycle boundary, then take out the cycles it holds.
            after = await wait_cycles(client, before, 1)
            busy = delta(after, before)
        cycles = busy.get("set", 0)
        per_message = (sum(busy.values()) - cycles * per_cycle) / MESSAGES
        print(f"at-most-once to a connected device: {per_message:.2f} Redis calls per message; {busy}")
        assert 3.5 <= per_message <= 5.0, busy
    finally:
        for device in devices:
            await device.close()
        await client.aclose()
