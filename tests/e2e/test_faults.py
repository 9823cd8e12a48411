"""Proof under faults: at-least-once on Redis and Kafka while an edge dies with kill -9."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest
from pushplat_client import Backoff, PushClient, PushSender

from tests.helpers import Inbox, eventually

pytestmark = [pytest.mark.redis, pytest.mark.kafka]

DEVICES = 100
MESSAGES = 1000


async def test_every_at_least_once_message_reaches_every_app_exactly_once_across_an_edge_crash(deployment):
    api, _routers, (edge_a, edge_b) = await deployment.platform(routers=2, edges=2)
    # Each client knows both edges; it starts on "its" edge and rotates on reconnect.
    clients = {
        f"d{i}": PushClient(
            [edge_a.address, edge_b.address],
            user_id=f"u{i}",
            device_id=f"d{i}",
            backoff=Backoff(base=0.05, cap=0.5),
            heartbeat_interval=1.0,
        )
        for i in range(DEVICES)
    }
    inbox = Inbox()
    seen = inbox.seen
    try:
        for client in clients.values():
            await client.__aenter__()
        await asyncio.gather(*(c.wait_connected(timeout=30) for c in clients.values()))
        on_a = [n for n, c in clients.items() if c.edge_id == deployment.edge_id(edge_a.name)]
        assert 0 < len(on_a) < DEVICES, "devices should be spread over both edges"
        for name, client in clients.items():
            inbox.follow(name, client)

        expected: dict[str, list[str]] = collections.defaultdict(list)
        killed_at = None
        async with PushSender(api.address) as sender:
            for i in range(MESSAGES):
                device = f"d{i % DEVICES}"
                # Half to the device, half to its user (a user target takes the inbox path too).
                target = {"device_id": device} if i % 2 else {"user_id": f"u{i % DEVICES}"}
                await sender.send(**target, payload=f"m{i}", at_least_once=True)
                expected[device].append(f"m{i}")
                if i == MESSAGES // 2:
                    await edge_a.kill()  # kill -9, mid-stream
                    killed_at = time.monotonic()
        assert killed_at is not None

        def everything_arrived() -> bool:
            return all(len(set(seen[d])) >= len(expected[d]) for d in expected)

        await eventually(everything_arrived, 120, what="every message on every device after the crash")
        moved = [n for n in on_a if clients[n].edge_id == deployment.edge_id(edge_b.name)]
        lost = {d: sorted(set(expected[d]) - set(seen[d])) for d in expected if set(expected[d]) - set(seen[d])}
        duplicated = {d: len(v) - len(set(v)) for d, v in seen.items() if len(v) != len(set(v))}
        total = sum(len(v) for v in seen.values())
        print(
            f"fault test: {DEVICES} devices, {MESSAGES} at-least-once messages, {len(on_a)} devices moved off the "
            f"killed edge ({len(moved)} confirmed on the other); the apps saw {total} messages, "
            f"lost {sum(map(len, lost.values()))}, duplicated {sum(duplicated.values())}",
            flush=True,
        )
        assert not lost and not duplicated
        assert total == MESSAGES
        assert len(moved) == len(on_a)
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()
