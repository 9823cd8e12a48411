"""The per-unit Redis figures of the README's capacity model, counted on a real deployment (api,
router and edge processes on Redis + Kafka) with Redis's MONITOR: a registry refresh costs 2
Redis calls per connected device every ttl/3, and an at-most-once message to a connected
device 3 to 4 (one status write per role, and the router's lookup, one per routing batch).
A call is one request a pushplat process sends (a script is one call; the commands it runs
inside Redis are not). A change that adds a round trip per device or per message fails here,
and the README's model with it."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pushplat_client import PushSender
from redis.asyncio import Redis

from tests.helpers import RawDevice, eventually, require_env

pytestmark = pytest.mark.timeout(180)

DEVICES = 100
MESSAGES = 400
CYCLES = 5  # refresh cycles in the idle window
ACKED = 3


class Calls:
    """Every request pushplat's processes send to Redis, in order, from a MONITOR connection.
    The test marks windows with ECHO on its own connection, which MONITOR shows in order too."""

    def __init__(self, url: str) -> None:
        self.monitor_client = Redis.from_url(url)
        self.client = Redis.from_url(url)
        self.log: list[list[str]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()

        async def run() -> None:
            async with self.monitor_client.monitor() as monitor:
                ready.set()
                async for info in monitor.listen():
                    if info["client_type"] != "lua":  # run inside a script: part of that call
                        self.log.append(info["command"].split(" ", 2))

        self._task = asyncio.create_task(run())
        await ready.wait()

    async def mark(self, name: str) -> int:
        """Index in the log of an ECHO `name`, once MONITOR has shown it."""
        await self.client.echo(f"mark:{name}")
        found: list[int] = []

        def seen() -> bool:
            found[:] = [i for i, c in enumerate(self.log) if c[0].upper() == "ECHO" and c[1:] == [f"mark:{name}"]]
            return bool(found)

        await eventually(seen, timeout=10, what=f"MONITOR to show the mark {name}")
        return found[0]

    def sets(self) -> list[int]:
        # Each refresh cycle begins with one SET of the edge's own key; nothing else here SETs
        # (no idempotency keys).
        return [i for i, c in enumerate(self.log) if c[0].upper() == "SET"]

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.monitor_client.aclose()
        await self.client.aclose()


def names(commands: list[list[str]]) -> Counter[str]:
    # EVALSHA by script, so each script's share shows in a failure.
    return Counter(" ".join(c[:2]) if c[0].upper() == "EVALSHA" else c[0].upper() for c in commands)


async def test_redis_calls_per_refresh_and_per_message(deployment):
    calls = Calls(require_env("PUSHPLAT_TEST_REDIS_URL"))
    devices: list[RawDevice] = []
    try:
        api = await deployment.api()
        await deployment.router()
        edge = await deployment.edge("--registry-ttl-seconds", "3")  # a refresh every second
        devices = [RawDevice(edge.address) for _ in range(DEVICES)]
        for i, device in enumerate(devices):
            await device.hello(user_id=f"u{i}", device_id=f"d{i}")
        async with PushSender(api.address) as sender:
            first = await sender.send(device_id="d0", payload=b"warm-up")  # the router's group has joined
            await devices[0].read_messages(1)
            await calls.start()

            # What one GetStatus costs, to take the test's own polling out below.
            start = await calls.mark("status-start")
            await sender.get_status(first.message_id)
            status_end = await calls.mark("status-end")

            # Idle: whole refresh cycles, from one cycle's SET to the SET CYCLES later. The first
            # cycle is left out: an edge's first refresh may find its script not yet in Redis's
            # cache (a NOSCRIPT, then EVAL, once per process).
            await eventually(
                lambda: len([i for i in calls.sets() if i > start]) > CYCLES + 1, timeout=30, what="refreshes"
            )
            cycle_starts = [i for i in calls.sets() if i > start][1:]
            idle = [c for c in calls.log[cycle_starts[0] : cycle_starts[CYCLES]] if c[0].upper() != "ECHO"]
            per_device = len(idle) / CYCLES / DEVICES
            print(f"registry refresh: {per_device:.2f} Redis calls per device per refresh; {names(idle)}")
            # REFRESH + INDEX_ADD per device; the edge's own key and checks spread thin.
            assert 1.9 <= per_device <= 2.2, names(idle)
            # The per-device scripts (a late receipt flush may also have run a status write).
            scripts = Counter(c[1] for c in idle if c[0].upper() == "EVALSHA")
            refresh_scripts = {sha for sha, n in scripts.items() if n >= DEVICES}

            begin = await calls.mark("send-start")
            sent = await asyncio.gather(
                *(sender.send(device_id=f"d{i % DEVICES}", payload=b"x") for i in range(MESSAGES))
            )
            await asyncio.gather(*(d.read_messages(MESSAGES // DEVICES) for d in devices))
            polls = 0

            async def last_acked() -> bool:  # every role's receipt flush (50 ms) is in
                nonlocal polls
                polls += 1
                status = await sender.get_status(sent[-1].message_id)
                return [d.state for d in status.devices] == [ACKED]

            await eventually(last_acked, timeout=10, what="the last message's ACKED status")
            end = await calls.mark("send-end")

        def not_refresh(commands: list[list[str]]) -> list[list[str]]:
            # The refreshes that ran meanwhile (their SETs and scripts) are the registry's.
            return [
                c
                for c in commands
                if c[0].upper() != "SET" and not (c[0].upper() == "EVALSHA" and c[1] in refresh_scripts)
            ]

        status_calls = len(not_refresh(calls.log[start + 1 : status_end]))
        window = not_refresh(calls.log[begin + 1 : end])
        per_message = (len(window) - polls * status_calls) / MESSAGES
        print(
            f"at-most-once to a connected device: {per_message:.2f} Redis calls per message "
            f"({polls} GetStatus polls of {status_calls} calls taken out); {names(window)}"
        )
        # 3 status writes, plus the lookup: one per routing batch, so up to 1 per message.
        assert 3.0 <= per_message <= 4.5, names(window)
    finally:
        for device in devices:
            await device.close()
        await calls.close()
