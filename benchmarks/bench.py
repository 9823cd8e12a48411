#!/usr/bin/env python3
"""pushplat benchmark: N devices hold streams, M messages go through Push.Send to them.

It runs the server as real subprocesses (``pushplat dev``, or ``pushplat api|router|edge``
on Redis and Kafka), so the memory it reports is the server's alone, read from
/proc/PID/status, and the client side never shares a GIL or an event loop with it.

Figures: delivered messages/s, Send->receive latency (device receive time minus the
``created_at_ms`` the api stamps at Send; one machine, one clock), Send RPC latency, server
RSS per connected device, and CPU seconds per process so a reader can tell which side was
the bottleneck. The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import multiprocessing as mp
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushplat_client import PushClient, PushError, PushSender

ROOT = Path(__file__).resolve().parent.parent

# Probe messages (pipeline warm-up) carry this label so devices can leave them out of the figures.
PROBE_LABEL = "pushplat-bench"
PROBE_VALUE = "probe"

# Devices connect in slices of this many: 1,000 simultaneous handshakes measure the
# accept backlog, not the steady state we want RSS for.
CONNECT_SLICE = 100

# Without this, grpc shares one TCP connection (subchannel) among every channel in a
# process that has the same target and options, so 1,000 PushClients would be 1,000 HTTP/2
# streams on a single socket. Real devices each have their own connection; so must ours.
CLIENT_CHANNEL_OPTIONS: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]

HEALTH_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class BenchError(Exception):
    """The run cannot go on; the message says why (and where the server log is)."""


def log(text: str) -> None:
    # Progress goes to stderr so stdout carries only the report and the JSON line.
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# -- command line ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=(
            "Benchmark pushplat. Starts the server as subprocess(es) on free loopback ports, "
            "connects N devices, sends M messages through Push.Send and prints delivered "
            "messages/s, Send->receive latency, Send RPC latency and server memory per connected "
            "device, then one line of JSON with every figure. Embedded mode (default) runs "
            "`pushplat dev`; give --registry and --queue to run `pushplat api`, `router` and "
            "`edge` as three processes on Redis and Kafka instead."
        ),
    )
    parser.add_argument(
        "--devices",
        type=_positive,
        default=1000,
        metavar="N",
        help="devices to connect, one stream (TCP connection) each (default 1000)",
    )
    parser.add_argument(
        "--messages",
        type=_positive,
        default=10_000,
        metavar="M",
        help="messages to send, round-robin over the devices, Send with device_id (default 10000)",
    )
    parser.add_argument(
        "--payload-bytes",
        type=_non_negative,
        default=256,
        metavar="B",
        help="payload size of each message in bytes (default 256)",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=64,
        metavar="C",
        help="Send calls in flight at once, on one channel to the api (default 64)",
    )
    parser.add_argument(
        "--registry",
        metavar="URL",
        help="distributed mode: registry URL for api/router/edge, e.g. redis://127.0.0.1:6379/0 (needs --queue)",
    )
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="distributed mode: queue URL for api/router/edge, e.g. kafka://127.0.0.1:9092 (needs --registry)",
    )
    parser.add_argument(
        "--internal-auth",
        choices=("secret", "mtls", "insecure"),
        default="secret",
        help=(
            "distributed mode: how router and edge authenticate each other on the delivery port: a "
            "fresh --internal-secret (default), mutual TLS with certificates made by openssl for the "
            "run, or --insecure-internal (to measure what the auth costs)"
        ),
    )
    parser.add_argument(
        "--processes",
        type=_non_negative,
        default=0,
        metavar="K",
        help=(
            "client worker processes to spread the devices over; 0 keeps the devices in the bench "
            "process, next to the sender (default 0; try 1-2 when the client side is the bottleneck)"
        ),
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for deliveries after the first send (default 60 + M/1000)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the server log directory (it is kept anyway on failure)"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# -- machine and process facts ----------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = _proc_field(Path("/proc/meminfo"), "MemTotal")

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "mem_total_mib": round(mem_kib / 1024) if mem_kib else None,
        "python": platform.python_version(),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
        "uvloop": version("uvloop"),
        "pushplat": version("pushplat"),
        "platform": platform.platform(),
    }


def _proc_field(path: Path, name: str) -> int | None:
    """A 'Name:   1234 kB' line from /proc/meminfo or /proc/PID/status, as an int."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_kib(pid: int) -> int | None:
    return _proc_field(Path(f"/proc/{pid}/status"), "VmRSS")


def peak_rss_kib(pid: int) -> int | None:
    return _proc_field(Path(f"/proc/{pid}/status"), "VmHWM")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, all threads (grpc's C-core polls in its own threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields count from after it.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def loop_thread_sched(pid: int) -> tuple[float, float] | None:
    """(on-CPU, waiting-for-CPU) seconds of a process's main thread, which in pushplat is the
    event loop: a long wait means the loop was runnable but the machine had no core for it."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    # user nice system idle iowait irq softirq steal ...; guest time is already in user.
    total = sum(values[:8])
    idle = values[3] + values[4]
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def free_ports(count: int) -> list[int]:
    # Hold every socket open until all are picked so the kernel does not hand one out twice.
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


# -- the server under test --------------------------------------------------------------


@dataclass
class Role:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


def internal_auth_flags(mode: str, log_dir: Path) -> list[str]:
    """Router and edge flags for the delivery port's auth (the certificates live in log_dir)."""
    if mode == "insecure":
        return ["--insecure-internal"]
    if mode == "secret":
        return ["--internal-secret", secrets.token_hex(32)]
    pki = log_dir / "pki"
    pki.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*argv: str) -> None:
        subprocess.run(["openssl", *argv], cwd=pki, check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *ec, "-subj", "/CN=role", "-keyout", "role.key", "-out", "role.csr")
    (pki / "role.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl(
        "x509", "-req", "-in", "role.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "role.ext", "-out", "role.crt",
    )  # fmt: skip
    return [
        "--internal-tls-cert", str(pki / "role.crt"), "--internal-tls-key", str(pki / "role.key"),
        "--internal-ca", str(pki / "ca.crt"),
    ]  # fmt: skip


@dataclass
class Servers:
    """The pushplat subprocess(es). `measured` is the role whose RSS is per-device memory."""

    roles: list[Role]
    edge: str
    api: str
    measured: str
    log_dir: Path
    stopped: bool = False

    @classmethod
    def plan(cls, args: argparse.Namespace, log_dir: Path) -> Servers:
        edge_port, api_port, delivery_port = free_ports(3)
        base = [sys.executable, "-m", "pushplat"]
        # warning: per-session info lines would cost the server CPU we are trying to measure.
        # drain 1 s: the bench closes its devices first, so a 30 s drain would only waste time.
        common = ["--host", "127.0.0.1", "--log-level", "warning", "--metrics-port", "0"]
        edge_flags = ["--edge-port", str(edge_port), "--delivery-port", str(delivery_port), "--drain-seconds", "1"]
        api_flags = ["--api-port", str(api_port)]
        if args.registry is None:
            roles = [Role("dev", [*base, "dev", *common, *edge_flags, *api_flags], log_dir / "dev.log")]
            measured = "dev"
        else:
            # A fresh prefix per run: topics (and their consumer group offsets) never collide
            # with another run's leftovers.
            backends = [
                "--registry",
                args.registry,
                "--queue",
                args.queue,
                "--topic-prefix",
                f"bench-{secrets.token_hex(4)}",
            ]
            internal = internal_auth_flags(args.internal_auth, log_dir)
            roles = [
                Role("edge", [*base, "edge", *common, *backends, *internal, *edge_flags], log_dir / "edge.log"),
                Role("api", [*base, "api", *common, *backends, *api_flags], log_dir / "api.log"),
                Role("router", [*base, "router", *common, *backends, *internal], log_dir / "router.log"),
            ]
            measured = "edge"
        return cls(roles, f"127.0.0.1:{edge_port}", f"127.0.0.1:{api_port}", measured, log_dir)

    def start(self) -> None:
        # PUSHPLAT_* settings from the caller's shell (an auth secret, a metrics port) would
        # change what is measured; every option the bench relies on is on the command line.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHPLAT_")}
        for role in self.roles:
            log(f"starting pushplat {' '.join(role.argv[3:])}")
            with role.log_path.open("wb") as out:
                # Own session: a Ctrl-C in the terminal reaches only the bench, which then
                # stops the server itself (SIGTERM, wait, kill) after closing the devices.
                role.proc = subprocess.Popen(
                    role.argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )

    def pid(self, name: str) -> int:
        for role in self.roles:
            if role.name == name and role.proc is not None:
                return role.proc.pid
        raise KeyError(name)

    def check_alive(self) -> None:
        for role in self.roles:
            if role.proc is not None and role.proc.poll() is not None:
                raise BenchError(
                    f"pushplat {role.name} exited with status {role.proc.returncode}:\n"
                    f"{self.log_tail(role)}\n(log: {role.log_path})"
                )

    async def wait_healthy(self) -> float:
        """Wait until the edge and api answer grpc health checks with SERVING."""
        started = time.monotonic()
        deadline = started + HEALTH_TIMEOUT_S
        for address in dict.fromkeys((self.edge, self.api)):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    self.check_alive()
                    try:
                        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.aio.AioRpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise BenchError(f"{address} not healthy after {HEALTH_TIMEOUT_S:g}s (logs: {self.log_dir})")
                    await asyncio.sleep(0.1)
        # The router has no port of its own; it must at least still be running.
        await asyncio.sleep(0.2)
        self.check_alive()
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM every role, wait, then SIGKILL what is left. Safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        live = [r.proc for r in self.roles if r.proc is not None and r.proc.poll() is None]
        for proc in live:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT_S:g}s; killing it")
                proc.kill()
                proc.wait()

    @staticmethod
    def log_tail(role: Role, lines: int = 30) -> str:
        try:
            return "\n".join(role.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def unexpected_log_lines(self) -> list[str]:
        """Server log lines beyond the known startup warnings: drops, failures, tracebacks."""
        expected = ("auth.off", "api_key.off", "internal.insecure")
        found = []
        for role in self.roles:
            try:
                text = role.log_path.read_text(errors="replace")
            except OSError:
                continue
            found += [f"{role.name}: {line}" for line in text.splitlines() if not any(e in line for e in expected)]
        return found


# -- devices ---------------------------------------------------------------------------


@dataclass
class Received:
    """What the devices saw. Parallel lists keep 10k+ entries cheap to pickle."""

    ids: list[str] = field(default_factory=list)
    recv_s: list[float] = field(default_factory=list)  # time.time() when the SDK yielded it
    created_ms: list[int] = field(default_factory=list)  # Message.created_at_ms (api clock)
    probes: int = 0
    errors: list[str] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # per client worker process, message phase

    def extend(self, other: Received) -> None:
        self.ids += other.ids
        self.recv_s += other.recv_s
        self.created_ms += other.created_ms
        self.probes += other.probes
        self.errors += other.errors
        self.cpu_s += other.cpu_s


class DeviceGroup:
    """Some devices, each a PushClient with a task that drains its messages."""

    def __init__(self, edge: str, indices: range) -> None:
        self.edge = edge
        self.indices = indices
        self.clients: list[PushClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.got = Received()

    async def connect(self) -> None:
        for start in range(0, len(self.indices), CONNECT_SLICE):
            batch = []
            for i in self.indices[start : start + CONNECT_SLICE]:
                client = PushClient(
                    self.edge, user_id=f"u{i}", device_id=f"d{i}", channel_options=CLIENT_CHANNEL_OPTIONS
                )
                self.clients.append(client)
                # Iterating starts the client's connection task.
                self.tasks.append(asyncio.create_task(self._drain(client), name=f"bench-d{i}"))
                batch.append(client)
            await asyncio.gather(*(c.wait_connected(timeout=30.0) for c in batch))

    async def _drain(self, client: PushClient) -> None:
        got = self.got
        try:
            async for message in client:
                now = time.time()
                if message.labels.get(PROBE_LABEL) == PROBE_VALUE:
                    got.probes += 1
                    continue
                got.ids.append(message.message_id)
                got.recv_s.append(now)
                got.created_ms.append(message.created_at_ms)
        except PushError as exc:
            got.errors.append(f"{client!r}: {exc.code.name}: {exc.details}")

    def connected(self) -> int:
        return sum(1 for c in self.clients if c.connected)

    async def close(self) -> None:
        await asyncio.gather(*(c.close(grace=0.5) for c in self.clients), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Fleet(Protocol):
    """All devices, wherever they live: in the bench process or in client workers."""

    async def start(self) -> None: ...
    def connected(self) -> int: ...
    def received(self) -> int: ...
    def probes(self) -> int: ...
    def mark(self) -> None: ...
    async def results(self) -> Received: ...
    async def close(self) -> None: ...


class LocalFleet:
    """Devices on the bench's own event loop (simplest; shares a core with the sender)."""

    def __init__(self, edge: str, devices: int) -> None:
        self.group = DeviceGroup(edge, range(devices))

    async def start(self) -> None:
        try:
            await self.group.connect()
        except (PushError, TimeoutError) as exc:
            raise BenchError(f"devices could not connect: {exc!r}") from exc

    def connected(self) -> int:
        return self.group.connected()

    def received(self) -> int:
        return len(self.group.got.ids)

    def probes(self) -> int:
        return self.group.got.probes

    def mark(self) -> None:
        pass  # the bench process's own CPU is measured by the caller

    async def results(self) -> Received:
        return self.group.got

    async def close(self) -> None:
        await self.group.close()


@dataclass
class _Worker:
    proc: Any  # multiprocessing.Process (spawn context)
    cmd: Connection
    report: Connection
    connected: int = 0
    received: int = 0
    probes: int = 0
    ready: asyncio.Future[None] | None = None
    result: asyncio.Future[Received] | None = None
    dead: bool = False
    reader: threading.Thread | None = None


class ProcessFleet:
    """Devices spread over K spawned worker processes, each with its own event loop and GIL.

    Workers stream ("status", connected, received, probes) every 50 ms over a pipe, so the
    bench can wait for N sessions and M deliveries without asking; on "stop" they send their
    full Received (ids and timestamps) back.
    """

    def __init__(self, edge: str, devices: int, processes: int) -> None:
        self.edge = edge
        self.devices = devices
        self.processes = min(processes, devices)
        self.workers: list[_Worker] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # spawn, not fork: the parent already runs grpc, whose threads do not survive a fork.
        ctx = mp.get_context("spawn")
        bounds = [self.devices * k // self.processes for k in range(self.processes + 1)]
        for k in range(self.processes):
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            rep_r, rep_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=worker_main,
                args=(self.edge, bounds[k], bounds[k + 1], cmd_r, rep_w),
                name=f"bench-clients-{k}",
                daemon=True,  # dies with the bench, whatever happens
            )
            proc.start()
            cmd_r.close()
            rep_w.close()
            worker = _Worker(proc, cmd_w, rep_r, ready=loop.create_future(), result=loop.create_future())
            self.workers.append(worker)
            worker.reader = pipe_reader(rep_r, loop, functools.partial(self._on_report, worker))
        ready = [w.ready for w in self.workers if w.ready is not None]
        await asyncio.gather(*ready)

    def _on_report(self, worker: _Worker, msg: Any) -> None:
        if msg is None:  # EOF: the worker is gone
            worker.dead = True
            error = BenchError(f"client worker {worker.proc.name} exited (status {worker.proc.exitcode})")
            for fut in (worker.ready, worker.result):
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return
        kind = msg[0]
        if kind == "status":
            _, worker.connected, worker.received, worker.probes = msg
        elif kind == "ready" and worker.ready is not None and not worker.ready.done():
            worker.ready.set_result(None)
        elif kind == "error":
            for fut in (worker.ready, worker.result):
                if fut is not None and not fut.done():
                    fut.set_exception(BenchError(f"client worker {worker.proc.name}: {msg[1]}"))
        elif kind == "result" and worker.result is not None and not worker.result.done():
            worker.result.set_result(Received(**msg[1]))

    def _check(self) -> None:
        for w in self.workers:
            if w.dead and w.result is not None and w.result.done() and w.result.exception():
                raise w.result.exception()  # type: ignore[misc]

    def connected(self) -> int:
        self._check()
        return sum(w.connected for w in self.workers)

    def received(self) -> int:
        self._check()
        return sum(w.received for w in self.workers)

    def probes(self) -> int:
        return sum(w.probes for w in self.workers)

    def mark(self) -> None:
        for w in self.workers:
            w.cmd.send("mark")

    async def results(self) -> Received:
        for w in self.workers:
            w.cmd.send("stop")
        futures = [w.result for w in self.workers if w.result is not None]
        parts = await asyncio.wait_for(asyncio.gather(*futures), 60.0)
        total = Received()
        for part in parts:
            total.extend(part)
        return total

    async def close(self) -> None:
        for w in self.workers:
            try:
                w.cmd.send("stop")
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 10.0
        for w in self.workers:
            # join() blocks; in a thread it leaves the loop free for the other workers' pipes.
            await asyncio.to_thread(w.proc.join, max(0.1, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(1.0)
            w.cmd.close()
            # The worker's end is closed now, so the reader thread has seen EOF (or will soon).
            if w.reader is not None:
                w.reader.join(1.0)
            if w.reader is None or not w.reader.is_alive():
                w.report.close()


def pipe_reader(conn: Connection, loop: asyncio.AbstractEventLoop, handle: Callable[[Any], None]) -> threading.Thread:
    """Read messages from conn in a daemon thread and hand each to the loop; None means EOF.

    A thread, not loop.add_reader: uvloop makes a watched fd non-blocking, and Connection.recv
    then fails halfway through a message bigger than the pipe buffer (the final results are).
    """

    def read() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            try:
                loop.call_soon_threadsafe(handle, msg)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if msg is None:
                return

    thread = threading.Thread(target=read, name="bench-pipe-reader", daemon=True)
    thread.start()
    return thread


def worker_main(edge: str, start: int, stop: int, cmd: Connection, report: Connection) -> None:
    """Entry point of a client worker process (spawned)."""
    # Ctrl-C reaches the whole process group; the bench decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run(_worker(edge, range(start, stop), cmd, report))


async def _worker(edge: str, indices: range, cmd: Connection, report: Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def on_command(command: str | None) -> None:
        # None is EOF: the bench is gone, so stop.
        commands.put_nowait(command or "exit")

    pipe_reader(cmd, loop, on_command)
    group = DeviceGroup(edge, indices)

    async def status() -> None:
        while True:
            report.send(("status", group.connected(), len(group.got.ids), group.got.probes))
            await asyncio.sleep(0.05)

    reporter = asyncio.create_task(status())
    try:
        try:
            await group.connect()
        except Exception as exc:
            report.send(("error", f"connect failed: {exc!r}"))
            return
        report.send(("ready",))
        cpu_mark = own_cpu_seconds()
        while True:
            command = await commands.get()
            if command == "mark":
                cpu_mark = own_cpu_seconds()
            elif command == "stop":
                group.got.cpu_s = [own_cpu_seconds() - cpu_mark]
                reporter.cancel()
                report.send(("status", group.connected(), len(group.got.ids), group.got.probes))
                # A plain dict: this module is __mp_main__ here but __main__ in the bench, so a
                # pickled Received would not resolve there.
                report.send(("result", vars(group.got)))
                return
            elif command == "exit":
                return
    except (BrokenPipeError, OSError):
        return  # the bench went away mid-report
    finally:
        reporter.cancel()
        await group.close()


# -- sending ---------------------------------------------------------------------------


@dataclass
class SendStats:
    ids: list[str] = field(default_factory=list)
    rpc_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    started: float = 0.0  # time.time() just before the first Send
    finished: float = 0.0  # time.time() when the last Send returned


async def send_all(
    sender: PushSender, stats: SendStats, devices: int, messages: int, concurrency: int, payload: bytes
) -> None:
    """M sends round-robin over the devices, exactly C in flight: C loops each doing one
    Send at a time (10k concurrent unary calls on one channel would get some cancelled).
    Fills `stats` as it goes, so a run cut short by the timeout still reports what it sent."""
    next_index = 0

    async def lane() -> None:
        nonlocal next_index
        while next_index < messages:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                response = await sender.send(device_id=f"d{i % devices}", payload=payload)
            except PushError as exc:
                stats.errors[exc.code.name] += 1
                stats.first_error = stats.first_error or f"{exc.code.name}: {exc.details}"
                continue
            stats.rpc_s.append(time.perf_counter() - t0)
            stats.ids.append(response.message_id)

    stats.started = time.time()
    try:
        await asyncio.gather(*(lane() for _ in range(min(concurrency, messages))))
    finally:
        stats.finished = time.time()


async def warm_up(sender: PushSender, fleet: Fleet, servers: Servers) -> float:
    """Send probes to d0 until one arrives: the pipeline works end to end (with Kafka, the
    router's consumer group has joined) before the clock starts."""
    started = time.monotonic()
    deadline = started + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        before = fleet.probes()
        try:
            await sender.send(device_id="d0", payload=b"probe", labels={PROBE_LABEL: PROBE_VALUE})
        except PushError as exc:
            log(f"probe send failed: {exc.code.name}: {exc.details}; retrying")
        wait_until = time.monotonic() + 2.0
        while time.monotonic() < wait_until:
            servers.check_alive()
            if fleet.probes() > before:
                return time.monotonic() - started
            await asyncio.sleep(0.02)
    raise BenchError(f"no probe message reached device d0 within {PROBE_TIMEOUT_S:g}s (logs: {servers.log_dir})")


# -- the run ---------------------------------------------------------------------------


async def wait_for(what: str, done: Callable[[], bool], timeout: float, servers: Servers, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        servers.check_alive()
        if time.monotonic() > deadline:
            log(f"timed out after {timeout:g}s waiting for {what}")
            return False
        await asyncio.sleep(every)
    return True


async def bench(args: argparse.Namespace, servers: Servers) -> dict[str, Any]:
    n, m = args.devices, args.messages
    mode = "embedded" if args.registry is None else "distributed"
    measured = servers.pid(servers.measured)
    health_s = await servers.wait_healthy()
    log(f"server healthy in {health_s:.2f}s: edge {servers.edge}, api {servers.api}")

    # Let start-up allocation settle so "before" is the idle server, not one mid-import.
    await asyncio.sleep(1.0)
    rss_before = rss_kib(measured)

    fleet: Fleet = LocalFleet(servers.edge, n) if args.processes == 0 else ProcessFleet(servers.edge, n, args.processes)
    sender = PushSender(servers.api)
    try:
        log(f"connecting {n} devices" + (f" from {args.processes} worker processes" if args.processes else ""))
        t0 = time.monotonic()
        await fleet.start()
        if not await wait_for(f"{n} connected devices", lambda: fleet.connected() >= n, 30.0, servers):
            raise BenchError(f"only {fleet.connected()} of {n} devices connected")
        connect_s = time.monotonic() - t0
        await asyncio.sleep(1.0)  # registrations and per-stream buffers settle before we read RSS
        rss_connected = rss_kib(measured)
        log(f"{n} devices connected in {connect_s:.2f}s")

        probe_s = await warm_up(sender, fleet, servers)
        log(f"pipeline warm (probe delivered) after {probe_s:.2f}s; sending {m} messages, {args.concurrency} in flight")

        payload = os.urandom(args.payload_bytes)
        cpu_server0 = {r.name: cpu_seconds(servers.pid(r.name)) for r in servers.roles}
        cpu_bench0 = own_cpu_seconds()
        sched0 = {r.name: loop_thread_sched(servers.pid(r.name)) for r in servers.roles}
        machine0 = machine_cpu_seconds()
        load_before = load_average()
        fleet.mark()
        stats = SendStats()
        send_task = asyncio.create_task(send_all(sender, stats, n, m, args.concurrency, payload))
        timeout = args.timeout if args.timeout is not None else 60.0 + m / 1000
        t_send = time.monotonic()
        # Wait for the sends first (they bound what can arrive), then for the deliveries.
        while not send_task.done():
            servers.check_alive()
            if time.monotonic() - t_send > timeout:
                log(f"timed out after {timeout:g}s with sends still in flight")
                send_task.cancel()
                break
            await asyncio.sleep(0.05)
        await asyncio.gather(send_task, return_exceptions=True)
        accepted = len(stats.ids)
        log(f"{accepted} sends accepted in {stats.finished - stats.started:.2f}s; waiting for deliveries")
        left = max(1.0, timeout - (time.monotonic() - t_send))
        await wait_for(f"{accepted} deliveries", lambda: fleet.received() >= accepted, left, servers)
        # Late duplicates or strays would show up in this short grace period.
        await asyncio.sleep(0.2)
        cpu_server = {
            name: round(after - before, 2)
            for name, before in cpu_server0.items()
            if before is not None and (after := cpu_seconds(servers.pid(name))) is not None
        }
        machine1 = machine_cpu_seconds()
        sched1 = {r.name: loop_thread_sched(servers.pid(r.name)) for r in servers.roles}
        loop_threads = {
            name: {"on_cpu_s": round(b[0] - a[0], 2), "waiting_for_cpu_s": round(b[1] - a[1], 2)}
            for name, a in sched0.items()
            if a is not None and (b := sched1[name]) is not None
        }
        got = await fleet.results()
        cpu_bench = own_cpu_seconds() - cpu_bench0
        rss_after = rss_kib(measured)
        rss_peak = peak_rss_kib(measured)
    finally:
        await sender.close()
        log("closing devices")
        await fleet.close()

    sent = set(stats.ids)
    latencies: list[float] = []
    last_recv = 0.0
    seen: set[str] = set()
    duplicates = strays = 0
    for mid, recv_s, created_ms in zip(got.ids, got.recv_s, got.created_ms, strict=True):
        if mid not in sent:
            strays += 1
            continue
        if mid in seen:
            duplicates += 1
            continue
        seen.add(mid)
        latencies.append(recv_s * 1000 - created_ms)
        last_recv = max(last_recv, recv_s)
    latencies.sort()
    rpc_ms = sorted(s * 1000 for s in stats.rpc_s)
    delivered = len(seen)
    elapsed = (last_recv - stats.started) if delivered else None
    send_elapsed = stats.finished - stats.started

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    # Other work on the machine (a colleague's test run) skews every figure; say how much.
    ours = sum(cpu_server.values()) + cpu_bench + sum(got.cpu_s)
    busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
    cores = os.cpu_count() or 1
    wall = total / cores
    other_cores = round(max(0.0, busy - ours) / wall, 2) if total > 0 else None
    busy_cores = round(busy / wall, 2) if total > 0 else None

    per_device = growth_per_message = None
    if rss_before is not None and rss_connected is not None:
        per_device = round((rss_connected - rss_before) / n, 2)
    if rss_connected is not None and rss_after is not None:
        # Memory that stays after the messages are gone: retained per-message state.
        growth_per_message = round((rss_after - rss_connected) / m, 2)
    return {
        "mode": mode,
        "internal_auth": args.internal_auth if args.registry is not None else "in-process",
        "devices": n,
        "messages": m,
        "payload_bytes": args.payload_bytes,
        "concurrency": args.concurrency,
        "client_processes": args.processes,
        "accepted": accepted,
        "send_errors": dict(stats.errors),
        "first_send_error": stats.first_error or None,
        "delivered": delivered,
        "not_accepted": m - accepted,
        "lost": accepted - delivered,
        "duplicates": duplicates,
        "strays": strays,
        "device_errors": got.errors[:5],
        "elapsed_s": ms(elapsed),
        "delivered_per_s": round(delivered / elapsed) if elapsed else None,
        "send_phase_s": ms(send_elapsed),
        "sends_per_s": round(accepted / send_elapsed) if send_elapsed > 0 else None,
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p95": ms(percentile(latencies, 95)),
            "p99": ms(percentile(latencies, 99)),
            "max": ms(latencies[-1] if latencies else None),
        },
        "send_rpc_ms": {"p50": ms(percentile(rpc_ms, 50)), "p99": ms(percentile(rpc_ms, 99))},
        "connect_s": round(connect_s, 2),
        "probe_s": round(probe_s, 2),
        "server_rss_role": servers.measured,
        "server_rss_kib": {
            "before": rss_before,
            "connected": rss_connected,
            "after_messages": rss_after,
            "peak": rss_peak,
        },
        "server_rss_per_device_kib": per_device,
        "server_rss_growth_per_message_kib": growth_per_message,
        "cpu_s": {
            "server": cpu_server,
            "bench_process": round(cpu_bench, 2),
            "client_workers": [round(c, 2) for c in got.cpu_s],
        },
        "server_loop_thread": loop_threads,
        "machine_load": {
            "loadavg_1m_at_start": load_before,
            "busy_cores": busy_cores,
            "other_processes_cores": other_cores,
        },
        "machine": machine_info(),
    }


def report(r: dict[str, Any], servers: Servers) -> None:
    mach = r["machine"]
    lat, rpc, rss = r["latency_ms"], r["send_rpc_ms"], r["server_rss_kib"]
    cpu = r["cpu_s"]
    server_cpu = ", ".join(f"{k} {v}s" for k, v in cpu["server"].items())
    workers = f", client workers {cpu['client_workers']}s" if cpu["client_workers"] else ""
    errors = f" (errors: {r['send_errors']}, first: {r['first_send_error']})" if r["send_errors"] else ""
    lines = [
        "",
        f"pushplat bench ({r['mode']} mode)",
        f"  machine      {mach['cpu_model']}, {mach['cpu_count']} cores, {mach['mem_total_mib']} MiB RAM",
        f"               {mach['platform']}",
        f"               Python {mach['python']}, grpcio {mach['grpcio']}, protobuf {mach['protobuf']}, "
        f"uvloop {mach['uvloop']}",
        f"  workload     {r['devices']} devices, {r['messages']} messages of {r['payload_bytes']} B, "
        f"{r['concurrency']} sends in flight, client processes: {r['client_processes'] or 'in bench process'}",
        f"  connect      {r['devices']} devices in {r['connect_s']} s; pipeline warm after {r['probe_s']} s",
        f"  sends        {r['accepted']} accepted in {r['send_phase_s']} s ({r['sends_per_s']}/s){errors}",
        f"  delivered    {r['delivered']} of {r['messages']} (lost {r['lost']} of the accepted, "
        f"duplicates {r['duplicates']}, "
        f"strays {r['strays']}) in {r['elapsed_s']} s first send -> last receive",
        f"  throughput   {r['delivered_per_s']} delivered messages/s",
        f"  Send->recv   p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        f"  Send RPC     p50 {rpc['p50']} ms, p99 {rpc['p99']} ms",
        f"  server RSS   ({r['server_rss_role']}) before {rss['before']} KiB, {r['devices']} connected "
        f"{rss['connected']} KiB, after messages {rss['after_messages']} KiB, peak {rss['peak']} KiB",
        f"               {r['server_rss_per_device_kib']} KiB per connected device; "
        f"{r['server_rss_growth_per_message_kib']} KiB more per message sent (kept after delivery)",
        f"  CPU (send phase)  server: {server_cpu}; bench process {cpu['bench_process']}s{workers}",
    ]
    for name, t in r["server_loop_thread"].items():
        lines.append(
            f"  {name} loop    event-loop thread on CPU {t['on_cpu_s']} s, runnable but waiting for a core "
            f"{t['waiting_for_cpu_s']} s (send phase)"
        )
    load = r["machine_load"]
    lines.append(
        f"  machine load {load['busy_cores']} of {mach['cpu_count']} cores busy during the send phase, "
        f"{load['other_processes_cores']} of them other processes (1-min load average "
        f"{load['loadavg_1m_at_start']} at start)"
    )
    if r["device_errors"]:
        lines.append(f"  device errors {r['device_errors']}")
    extra = servers.unexpected_log_lines()
    if extra:
        lines.append(f"  server log   {len(extra)} unexpected line(s), first: {extra[0][:200]}")
    print("\n".join(lines), flush=True)
    print(json.dumps(r, sort_keys=False), flush=True)


def run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def amain(args: argparse.Namespace, servers: Servers) -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C does: devices closed, server stopped.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        result = await bench(args, servers)
    finally:
        # Devices are closed by now; stop the server before the loop goes away.
        log("stopping server")
        servers.stop()
    report(result, servers)
    return 0 if result["delivered"] == result["messages"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.registry is None) != (args.queue is None):
        build_parser().error("distributed mode needs both --registry and --queue")
    log_dir = Path(tempfile.mkdtemp(prefix="pushplat-bench-"))
    servers = Servers.plan(args, log_dir)
    failed = True
    try:
        servers.start()
        status = run(amain(args, servers))
        failed = False
        return status
    except BenchError as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("scripts/bench: interrupted", file=sys.stderr)
        failed = False  # nothing went wrong that the logs could explain
        return 130
    finally:
        servers.stop()  # a no-op unless the loop died before amain's own cleanup
        # Keep the logs when they may explain something: a failure, or warnings in them.
        if not failed and not args.keep_logs and not servers.unexpected_log_lines():
            for path in log_dir.iterdir():
                path.unlink()
            log_dir.rmdir()
        else:
            print(f"scripts/bench: server logs kept in {log_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
