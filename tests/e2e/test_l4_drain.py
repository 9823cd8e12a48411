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
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pushplat_client import Backoff, PushClient, PushSender

from tests.helpers import eventually, free_port, require_env

# The run itself takes ~20 s; the bound leaves room for haproxy.sh to apt-get haproxy first.
pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_SH = ROOT / "scripts" / "services" / "haproxy.sh"
PUSHPLAT = [sys.executable, "-m", "pushplat"]

CLIENTS = 500
DRAIN_SECONDS = 10.0
# Past the window: the last client's reconnect, plus HAProxy's check lag at the start.
SLACK_SECONDS = 3.0
# The edge's own limit after the window (Config.goaway_grace_seconds) before it gives up.
EDGE_GRACE_SECONDS = 5.0
PEAK_FACTOR = 1.5
CHECK_INTER = "200ms"


@dataclass
class Proc:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    port: int = 0
    metrics_port: int = 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


class Cluster:
    """Role processes on shared Redis + Kafka, isolated by a unique prefix; all killed at the end."""

    def __init__(self, redis_url: str, kafka_url: str, log_dir: Path) -> None:
        self.prefix = f"l4drain{uuid.uuid4().hex[:8]}"
        sep = "&" if "?" in redis_url else "?"
        self.registry = f"{redis_url}{sep}prefix={self.prefix}"
        self.kafka_url = kafka_url
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def _common(self) -> list[str]:
        return ["--registry", self.registry, "--queue", self.kafka_url, "--topic-prefix", self.prefix]

    async def spawn(self, name: str, *args: str, port: int = 0) -> Proc:
        metrics_port = free_port()
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *PUSHPLAT,
                *args,
                *self._common(),
                "--metrics-port",
                str(metrics_port),
                stdout=log,
                stderr=log,
                env=dict(os.environ),
            )
        p = Proc(name, proc, log_path, port, metrics_port)
        self.procs.append(p)
        return p

    async def api(self) -> Proc:
        port = free_port()
        return await self.spawn("api", "api", "--api-port", str(port), port=port)

    async def router(self) -> Proc:
        return await self.spawn("router", "router")

    async def edge(self, name: str) -> Proc:
        port = free_port()
        return await self.spawn(
            name,
            "edge",
            "--edge-port",
            str(port),
            "--delivery-port",
            str(free_port()),
            "--edge-id",
            self.edge_id(name),
            "--drain-seconds",
            str(DRAIN_SECONDS),
            port=port,
        )

    def edge_id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    async def wait_up(self, p: Proc, timeout: float = 60.0) -> None:
        """Bounded wait until the role serves (health SERVING, or /metrics for a router)."""

        async def up() -> bool:
            if p.proc.returncode is not None:
                pytest.fail(f"{p.name} exited with {p.proc.returncode} during start-up:\n{p.log_tail()}")
            if p.port:
                return await grpc_serving(p.port)
            return await asyncio.to_thread(_metrics_reachable, p.metrics_port)

        await eventually(up, timeout, what=f"{p.name} to start")

    async def kill_all(self) -> None:
        for p in self.procs:
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*(asyncio.wait_for(p.proc.wait(), 10) for p in self.procs), return_exceptions=True)


async def grpc_serving(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        return reply.read().decode()


def _metrics_reachable(port: int) -> bool:
    try:
        _scrape(port)
    except OSError:
        return False
    return True


def gauge(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    redis_url = require_env("PUSHPLAT_TEST_REDIS_URL")
    kafka_url = require_env("PUSHPLAT_TEST_KAFKA_URL")
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    c = Cluster(redis_url, kafka_url, log_dir)
    try:
        yield c
    finally:
        await c.kill_all()


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
    started = False

    async def start(*backends: str) -> HAProxy:
        nonlocal started
        started = True
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(HAPROXY_SH),
            "start",
            str(state),
            *backends,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PUSHPLAT_HAPROXY_CHECK_INTER": CHECK_INTER},
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 300)  # may apt-get install first
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail("scripts/services/haproxy.sh start did not finish within 300s")
        assert proc.returncode == 0, f"haproxy.sh start failed ({proc.returncode}):\n{err.decode()}"
        match = re.search(r"PUSHPLAT_TEST_HAPROXY_ADDR=(\S+)", (state / "env").read_text())
        assert match, f"haproxy.sh wrote no address:\n{out.decode()}\n{err.decode()}"
        return HAProxy(match.group(1), state / "haproxy" / "haproxy.log")

    try:
        yield start
    finally:
        if started:
            stop = await asyncio.create_subprocess_exec(
                "bash",
                str(HAPROXY_SH),
                "stop",
                str(state),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.wait_for(stop.wait(), 30)


async def test_l4_drain_moves_every_client_to_the_other_edge_evenly_and_loses_no_message(
    cluster: Cluster, haproxy, record_property
) -> None:
    # -- the platform: 1 api, 1 router, 2 edges, HAProxy in front of the edges' client ports
    api, router, edge_a, edge_b = await asyncio.gather(
        cluster.api(), cluster.router(), cluster.edge("a"), cluster.edge("b")
    )
    await asyncio.gather(*(cluster.wait_up(p) for p in (api, router, edge_a, edge_b)))
    lb = await haproxy(f"127.0.0.1:{edge_a.port}", f"127.0.0.1:{edge_b.port}")
    id_a, id_b = cluster.edge_id("a"), cluster.edge_id("b")

    # -- 500 devices through HAProxy, one TCP connection each (no shared subchannel pool)
    devices = [f"{cluster.prefix}-dev{i}" for i in range(CLIENTS)]
    clients = [
        PushClient(
            lb.address,
            user_id=f"{cluster.prefix}-user{i}",
            device_id=devices[i],
            backoff=Backoff(base=0.05, cap=2.0),
            channel_options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for i in range(CLIENTS)
    ]
    received: dict[int, list] = defaultdict(list)

    async def consume(i: int) -> None:
        async for message in clients[i]:
            received[i].append(message)

    consumers = [asyncio.create_task(consume(i)) for i in range(CLIENTS)]
    sender = PushSender(f"127.0.0.1:{api.port}")
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
        edge_a.proc.send_signal(signal.SIGTERM)
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
        rc = await asyncio.wait_for(edge_a.proc.wait(), DRAIN_SECONDS + EDGE_GRACE_SECONDS + 10)
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
            text = await asyncio.to_thread(_scrape, edge_b.metrics_port)
            return gauge(text, "pushplat_open_connections") == CLIENTS

        await eventually(b_holds_all, 10, what=f"edge B's pushplat_open_connections to read {CLIENTS}")
    finally:
        await asyncio.gather(*(c.close(grace=0.5) for c in clients), return_exceptions=True)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        await sender.close()
