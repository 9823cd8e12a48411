"""`--workers N` on real processes (Redis + Kafka): edge workers share the device port through
SO_REUSEPORT and the kernel splits connections evenly between them, each worker is its own edge
(id, delivery port) that routers deliver to, the supervisor restarts a worker killed with -9
and drains every worker on SIGTERM, and a worker that cannot start stops the group with 2."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from pathlib import Path

import grpc
import pytest
from pushplat_client import PushSender
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc

from tests.helpers import eventually
from tests.processes import PUSHPLAT, Role, scrape

pytestmark = pytest.mark.timeout(240)

CONNECTIONS = 1000
WORKER_STOP_SECONDS = 60


def two_free_ports() -> int:
    """p such that p and p + 1 are free now (metrics ports are base + worker index)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            base = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", base + 1))
                except OSError:
                    continue
                return base
    raise AssertionError("no two consecutive free ports")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie has exited: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


class Device:
    """One device stream on its own TCP connection (a local subchannel pool: channels to one
    address would otherwise share one connection, and the kernel could not split them)."""

    def __init__(self, address: str, device_id: str) -> None:
        self.device_id = device_id
        self.channel = grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        self.call = edge_pb2_grpc.EdgeStub(self.channel).Connect()

    async def hello(self) -> edge_pb2.Welcome:
        await self.call.write(
            edge_pb2.ClientFrame(hello=edge_pb2.Hello(user_id="u-" + self.device_id, device_id=self.device_id))
        )
        frame = await asyncio.wait_for(self.call.read(), 30)
        assert frame.HasField("welcome"), frame
        return frame.welcome

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


async def edge_with_workers(deployment, metrics: int, *extra: str) -> Role:
    """An edge role with two workers, once both serve (the role's health answers from either)."""
    edge = await deployment.edge(
        "--workers", "2", "--delivery-port", "0", "--metrics-port", str(metrics),
        "--max-connects-per-second", "0", "--max-pending-hellos", "0", "--drain-seconds", "1", *extra,
    )  # fmt: skip
    await eventually(lambda: edge.log().count("event=server.started") >= 2, timeout=60, what="both workers to start")
    return edge


async def test_connections_split_evenly_and_each_worker_is_an_edge(deployment):
    api = await deployment.api()
    await deployment.router()
    metrics = two_free_ports()
    edge = await edge_with_workers(deployment, metrics)
    devices = [Device(edge.address, f"dev-{i}") for i in range(CONNECTIONS)]
    try:
        for start in range(0, CONNECTIONS, 100):
            await asyncio.gather(*(d.hello() for d in devices[start : start + 100]))
        per_worker = [gauge(await asyncio.to_thread(scrape, metrics + i), "pushplat_open_connections") for i in (0, 1)]
        print(f"connections per edge worker: {per_worker}")
        assert sum(per_worker) == CONNECTIONS
        # Even within ±10%: for 1,000 connections hashed at random the spread is ±16 (1 sigma).
        assert all(abs(n - CONNECTIONS / 2) <= CONNECTIONS / 2 * 0.10 for n in per_worker), per_worker

        # One device on each worker (the registry says which), and a message to each: the
        # router finds each worker by its own edge id and delivery port.
        by_edge: dict[str, Device] = {}
        async with PushSender(api.address) as sender:
            for device in devices:
                presence = await sender.get_presence("u-" + device.device_id)
                by_edge.setdefault(presence.devices[0].edge_id, device)
                if len(by_edge) == 2:
                    break
        assert set(by_edge) == {f"{deployment.edge_id(edge.name)}-w0", f"{deployment.edge_id(edge.name)}-w1"}
        async with PushSender(api.address) as sender:
            for edge_id, device in by_edge.items():
                sent = await sender.send(device_id=device.device_id, payload=edge_id)
                frame = await asyncio.wait_for(device.call.read(), 30)
                assert [m.message_id for m in frame.pushes.messages] == [sent.message_id], f"delivered by {edge_id}"
    finally:
        await asyncio.gather(*(d.close() for d in devices))


async def test_a_killed_worker_is_restarted_and_sigterm_drains_them_all(deployment):
    metrics = two_free_ports()
    edge = await edge_with_workers(deployment, metrics)
    assert edge.proc is not None
    first = children(edge.proc.pid)
    assert len(first) == 2
    victim = first[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = children(edge.proc.pid)
        return len(now) == 2 and victim not in now

    await eventually(replaced, timeout=30, what="the supervisor to restart the killed worker")
    await eventually(lambda: "event=workers.restart" in edge.log(), timeout=10, what="the restart in the log")
    assert "signal=SIGKILL" in edge.log()

    await eventually(lambda: edge.log().count("event=server.started") >= 3, timeout=60, what="the new worker to serve")
    workers = children(edge.proc.pid)
    assert await edge.terminate(timeout=60) == 0, edge.log_tail()
    log = edge.log()
    assert log.count("event=workers.worker_exited") >= 2 and "event=workers.stopped role=edge exit_code=0" in log
    assert not [pid for pid in workers if alive(pid)], "no worker outlives the supervisor"
    assert log.count("event=edge.drain_start") >= 2, "each worker drained"


async def test_workers_die_with_a_supervisor_killed_with_minus_9(deployment):
    """kill -9 of the supervisor gives it no chance to stop its workers: the kernel tells them
    (SIGTERM on parent death), and each stops as it would on the supervisor's SIGTERM."""
    metrics = two_free_ports()
    edge = await edge_with_workers(deployment, metrics)
    assert edge.proc is not None
    workers = children(edge.proc.pid)
    assert len(workers) == 2
    try:
        started = asyncio.get_running_loop().time()
        await edge.kill()
        # Each worker drains for --drain-seconds (1 s here), then closes its stores: well within
        # WORKER_STOP_SECONDS, the bound the SIGTERM test above gives the whole group.
        await eventually(
            lambda: not any(alive(pid) for pid in workers), WORKER_STOP_SECONDS, what="every worker to exit"
        )
        print(f"workers gone {asyncio.get_running_loop().time() - started:.1f}s after kill -9 of their supervisor")
        log = edge.log()
        assert log.count("event=edge.drain_start") >= 2, "each worker stopped as on SIGTERM: it drained"
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)  # never leave an orphan behind, pass or fail


async def test_a_worker_that_cannot_start_stops_the_group(deployment):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        role = Role("api-taken", ["api", "--workers", "2", "--metrics-port", str(port - 1), "--registry",
                                  deployment.registry, "--queue", deployment.kafka_url])  # fmt: skip
        # Worker 1's metrics port (base + 1) is taken: it exits with 2, and so does the group.
        role.log_path = deployment.log_dir / "api-taken.log"
        with role.log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(*PUSHPLAT, *role.args, stdout=log, stderr=log)
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
    text = role.log()
    assert code == 2, text[-3000:]
    assert "event=workers.worker_failed_to_start" in text and "metrics" in text


async def test_edge_workers_share_the_websocket_port(deployment):
    """--ws-port with --workers: every worker listens on it (SO_REUSEPORT), as on the gRPC port,
    and WebSocket devices land on both."""
    from websockets.asyncio.client import connect

    metrics = two_free_ports()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ws_port = probe.getsockname()[1]
    await edge_with_workers(deployment, metrics, "--ws-port", str(ws_port))
    connections = []
    try:
        for i in range(40):
            ws = await connect(f"ws://127.0.0.1:{ws_port}/connect", subprotocols=["pushplat.v1"])
            connections.append(ws)
            hello = edge_pb2.Hello(user_id=f"u-ws-{i}", device_id=f"ws-{i}")
            await ws.send(edge_pb2.ClientFrame(hello=hello).SerializeToString())
            frame = edge_pb2.ServerFrame.FromString(await asyncio.wait_for(ws.recv(), 30))
            assert frame.HasField("welcome"), frame
        websocket_open = 'pushplat_open_connections_by_transport{transport="websocket"}'
        open_per_worker = [gauge(await asyncio.to_thread(scrape, metrics + i), websocket_open) for i in range(2)]
        assert sum(open_per_worker) == 40 and min(open_per_worker) > 0, open_per_worker
    finally:
        for ws in connections:
            await ws.close()
