"""A rolling deploy behind a layer-4 balancer: HAProxy (TCP mode) in front of two edges.

Every role runs as its own OS process on real Redis and Kafka. 500 SDK clients connect
through HAProxy, each on its own TCP connection. Edge A gets SIGTERM while at-least-once
messages flow: HAProxy's gRPC health check sees A go NOT_SERVING and takes it out of
rotation, A spreads its GoAways over --drain-seconds, and every client reconnects (a new
TCP connection) and lands on edge B. The reconnects must arrive at about the even rate
(clients on A / drain window), not as a herd, and no message may be lost or shown twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from pushplat_client import Backoff, PushClient, PushSender

from tests.helpers import Inbox, eventually
from tests.processes import Deployment, scrape, service

# The run itself takes ~20 s; the bound leaves room for haproxy.sh to apt-get haproxy first.
pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(420)]

CLIENTS = 500
DRAIN_SECONDS = 10.0
# Past the window: the last client's reconnect, plus HAProxy's check lag at the start.
SLACK_SECONDS = 3.0
# The edge's own limit after the window (Config.goaway_grace_seconds) before it gives up.
EDGE_GRACE_SECONDS = 5.0
PEAK_FACTOR = 1.5
CHECK_INTER = "200ms"


def gauge(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@dataclass
class HAProxy:
    address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[HAProxy]]]:
    """start(backends) runs scripts/services/haproxy.sh into a private state dir; stopped afterwards."""
    if shutil.which("haproxy") is None and not os.environ.get("CI"):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("haproxy is not installed and this user cannot apt-get it")
    state = tmp_path / "haproxy-state"

    async with AsyncExitStack() as stack:

        async def start(*backends: str) -> HAProxy:
            check = {"PUSHPLAT_HAPROXY_CHECK_INTER": CHECK_INTER}
            # The long bound: haproxy.sh may apt-get haproxy first.
            lb = await stack.enter_async_context(service("haproxy", state, *backends, env=check, timeout=300))
            address = lb.env.get("PUSHPLAT_TEST_HAPROXY_ADDR")
            assert address, f"haproxy.sh wrote no address: {lb.env}"
            return HAProxy(address, state / "haproxy" / "haproxy.log")

        yield start


async def test_l4_drain_moves_every_client_to_the_other_edge_evenly_and_loses_no_message(
    deployment: Deployment, haproxy, record_property
) -> None:
    # -- the platform: 1 api, 1 router, 2 edges, HAProxy in front of the edges' client ports
    drain = ("--drain-seconds", str(DRAIN_SECONDS))
    api, _router, edge_a, edge_b = await asyncio.gather(
        deployment.api(metrics=True),
        deployment.router(metrics=True),
        deployment.edge(*drain, name="a", metrics=True),
        deployment.edge(*drain, name="b", metrics=True),
    )
    lb = await haproxy(edge_a.address, edge_b.address)
    id_a, id_b = deployment.edge_id("a"), deployment.edge_id("b")

    # -- 500 devices through HAProxy, one TCP connection each (no shared subchannel pool)
    devices = [f"{deployment.prefix}-dev{i}" for i in range(CLIENTS)]
    clients = [
        PushClient(
            lb.address,
            user_id=f"{deployment.prefix}-user{i}",
            device_id=devices[i],
            backoff=Backoff(base=0.05, cap=2.0),
            channel_options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for i in range(CLIENTS)
    ]
    inbox = Inbox(keep=lambda message: message)
    received = inbox.seen
    for i, client in enumerate(clients):
        inbox.follow(i, client)
    sender = PushSender(api.address)
    try:
        await eventually(
            lambda: all(c.connected and c.edge_id for c in clients), 60, what=f"{CLIENTS} clients to connect"
        )
        on_a = [i for i, c in enumerate(clients) if c.edge_id == id_a]
        on_b = [i for i, c in enumerate(clients) if c.edge_id == id_b]
        assert len(on_a) + len(on_b) == CLIENTS, Counter(c.edge_id for c in clients)
        assert on_a and on_b, f"HAProxy put every client on one edge: {len(on_a)} on A, {len(on_b)} on B"
        print(f"\nclients before the drain: {len(on_a)} on edge A, {len(on_b)} on edge B")

        # The router consumes the lanes once its Kafka group has its partitions: probe (at
        # most once, twice a second) until one comes through, so the drain starts on a live
        # pipeline. Probes are left out of the exactly-once accounting below.
        probe_device = on_a[0]

        async def probe() -> None:
            while True:
                await sender.send(device_id=devices[probe_device], payload=b"probe")
                await asyncio.sleep(0.5)  # the probe rate; the wait below ends on the condition

        prober = asyncio.create_task(probe())
        try:
            await eventually(
                lambda: prober.done() or any(m.payload == b"probe" for m in received[probe_device]),
                60,
                what="a probe message to pass api -> Kafka -> router -> edge",
            )
        finally:
            prober.cancel()
            (outcome,) = await asyncio.gather(prober, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome  # a probe send failed

        # -- one at-least-once message per device, spread over the drain window
        order = list(range(CLIENTS))
        random.Random(7).shuffle(order)
        sent: dict[int, str] = {}

        async def send_one(i: int) -> None:
            reply = await sender.send(device_id=devices[i], payload=f"msg-{i}".encode(), at_least_once=True)
            sent[i] = reply.message_id

        async def send_all(start: float) -> None:
            tasks = []
            for k, i in enumerate(order):
                delay = start + DRAIN_SECONDS * k / CLIENTS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing, not a stand-in for a condition
                tasks.append(asyncio.create_task(send_one(i)))
            await asyncio.gather(*tasks)

        # -- reconnect times of A's clients, observed through the SDK's edge_id
        moved_at: dict[int, float] = {}
        pending_a = set(on_a)

        async def watch(t0: float) -> None:
            while pending_a:
                now = time.monotonic()
                for i in [i for i in pending_a if clients[i].edge_id == id_b]:
                    moved_at[i] = now - t0
                    pending_a.discard(i)
                await asyncio.sleep(0.01)

        t0 = time.monotonic()
        sending = asyncio.create_task(send_all(t0))
        watcher = asyncio.create_task(watch(t0))
        edge_a.send_signal(signal.SIGTERM)
        try:
            await eventually(
                lambda: not pending_a,
                DRAIN_SECONDS + SLACK_SECONDS,
                what=f"all {len(on_a)} clients of edge A to reconnect to edge B",
            )
        finally:
            watcher.cancel()
        await asyncio.wait_for(sending, 30)

        assert all(c.edge_id == id_b for c in clients), Counter(c.edge_id for c in clients)
        disturbed = [i for i in on_b if clients[i].connects != 1]
        assert not disturbed, f"{len(disturbed)} clients of edge B reconnected during A's drain"
        rc = await edge_a.wait(DRAIN_SECONDS + EDGE_GRACE_SECONDS + 10)
        assert rc == 0, f"edge A exited with {rc}:\n{edge_a.log_tail()}"

        # HAProxy's health check (not only the SDK's retries) took A out, and kept B in.
        haproxy_log = lb.log()
        assert re.search(r"Server edges/edge1 is DOWN", haproxy_log), haproxy_log[-3000:]
        assert "edges/edge2 is DOWN" not in haproxy_log, haproxy_log[-3000:]

        # -- the rate: no 1-second bucket well above the even spread
        buckets = Counter(int(t) for t in moved_at.values())
        peak = max(buckets.values())
        even = len(on_a) / DRAIN_SECONDS
        last = max(moved_at.values())
        per_second = [buckets.get(s, 0) for s in range(int(last) + 1)]
        print(
            f"drain: {len(on_a)} clients moved in {last:.2f}s; reconnects per second {per_second}; "
            f"peak {peak}/s vs even {even:.1f}/s (limit {PEAK_FACTOR * even:.1f}/s)"
        )
        record_property("clients_on_drained_edge", len(on_a))
        record_property("peak_reconnects_per_second", peak)
        record_property("even_reconnects_per_second", round(even, 2))
        record_property("last_reconnect_seconds", round(last, 3))
        assert last <= DRAIN_SECONDS + SLACK_SECONDS
        assert peak <= PEAK_FACTOR * even, f"reconnect peak {peak}/s > {PEAK_FACTOR} x even {even:.1f}/s"

        # -- every message reached its device's application exactly once
        assert len(sent) == CLIENTS

        def all_delivered() -> bool:
            return all(any(m.message_id == sent[i] for m in received[i]) for i in range(CLIENTS))

        await eventually(all_delivered, 30, what="every at-least-once message to reach its device")
        missing = [i for i in range(CLIENTS) if not any(m.message_id == sent[i] for m in received[i])]
        assert not missing
        shown = Counter(m.message_id for msgs in received.values() for m in msgs if m.payload != b"probe")
        duplicates = {mid: n for mid, n in shown.items() if n > 1}
        assert not duplicates, f"messages shown to the application more than once: {duplicates}"
        for i in range(CLIENTS):
            payloads = [m.payload for m in received[i] if m.payload != b"probe"]
            assert payloads == [f"msg-{i}".encode()], (i, payloads)

        # The autoscaling signal agrees: edge B now holds every stream.
        async def b_holds_all() -> bool:
            text = await asyncio.to_thread(scrape, edge_b.metrics_port)
            return gauge(text, "pushplat_open_connections") == CLIENTS

        await eventually(b_holds_all, 10, what=f"edge B's pushplat_open_connections to read {CLIENTS}")
    finally:
        await asyncio.gather(*(c.close(grace=0.5) for c in clients), return_exceptions=True)
        await inbox.close()
        await sender.close()
