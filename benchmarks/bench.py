#!/usr/bin/env python3
"""pushplat benchmark, measured like issue 11's side-by-side run.

Every part runs in its own process: the server roles (``pushplat dev``, or ``pushplat api``,
``router`` and ``edge`` on Redis + Kafka), the devices and the sender (a small Go program,
benchmarks/loadgen, built into a cache dir on first use). This script only starts them,
reads /proc and prints figures; it is idle while messages flow, so it does not steal the
server's core.

Figures per mode: delivered msg/s; latency from the sender's call to the device's receipt
(both CLOCK_MONOTONIC on one machine, matched by a sequence number in the payload, not
``created_at_ms``); server CPU per delivered message from /proc/PID/stat for every server
process; server RSS per idle connection. The last line of output is one JSON object.
It uses only the standard library, so it can drive any checkout (``--pushplat-root``).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The stand-in --floor runs (`python -m floor` in benchmarks/): the least a grpc.aio push server
# does per message (see its docstring).
FLOOR_ROOT = HERE / "floor"
LOADGEN_SRC = HERE / "loadgen"
SDK_GO = ROOT / "clients" / "go"

MODES = ("single", "batch", "stream", "fanout")
# Calls in flight per mode unless --inflight says otherwise: the side-by-side run's 64
# single sends and 4 batches; a stream's window of unanswered requests; one fan-out at a time.
DEFAULT_INFLIGHT = {"single": 64, "batch": 4, "stream": 256, "fanout": 1}
PAYLOAD_HEADER_BYTES = 9  # magic, kind, sequence number (benchmarks/loadgen/main.go)

# Server log lines that every run prints and that mean nothing is wrong.
EXPECTED_LOG = ("auth.off", "api_key.off", "internal.insecure")

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The run cannot go on; the message says why (and where the logs are)."""


def log(text: str) -> None:
    # Progress goes to stderr; stdout carries only the table and the JSON line.
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# -- command line ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModeSpec:
    mode: str
    rate: float  # offered msg/s; 0 = closed loop

    @property
    def label(self) -> str:
        return f"{self.mode}@{self.rate:g}/s" if self.rate else self.mode


def parse_modes(values: Sequence[str], default_rate: float) -> list[ModeSpec]:
    specs = []
    for value in values:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            name, _, rate_text = item.partition("@")
            names = MODES if name == "all" else (name,)
            if any(n not in MODES for n in names):
                raise argparse.ArgumentTypeError(f"unknown mode {name!r}: choose from {', '.join(MODES)} or all")
            try:
                rate = float(rate_text) if rate_text else None
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"bad rate in {item!r}: want MODE@MSG_PER_S, e.g. single@1000"
                ) from None
            if rate is not None and (rate <= 0 or "fanout" in names):
                raise argparse.ArgumentTypeError(f"{item!r}: a rate must be > 0, and fanout is closed loop only")
            # --rate applies to the modes that can be paced; fan-out is one Send at a time.
            specs += [ModeSpec(n, rate if rate is not None else 0.0 if n == "fanout" else default_rate) for n in names]
    return specs


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Benchmark pushplat as issue 11's side-by-side run did. The server roles, the devices and\n"
            "the sender each run in their own processes (devices and sender are a Go load generator,\n"
            "benchmarks/loadgen, built with `go build` into a cache dir on first use). Prints one table\n"
            "(a row per mode, the median of --runs runs) and the machine, then one JSON line.\n\n"
            "Modes: single  Push.Send, one message per call, --inflight calls at once (default 64)\n"
            "       batch   Push.SendBatch of --batch-size messages, --inflight calls at once (default 4)\n"
            "       stream  Push.SendStream, --inflight unanswered requests (default 256); a server\n"
            "               without it is reported as not supported\n"
            "       fanout  Push.Send to one user who owns every device, each Send once the last one\n"
            "               reached every device (--fanout-sends of them)\n"
            "Append @RATE for an open loop at a steady RATE msg/s, e.g. --mode single@1000."
        ),
        epilog=(
            "examples:\n"
            "  scripts/bench                                   # single, 1,000 devices, 10,000 messages\n"
            "  scripts/bench --mode single,batch,fanout,single@1000 --runs 3\n"
            "  scripts/bench --distributed --runs 3            # starts Redis and Kafka itself\n"
            "  scripts/bench --pushplat-root ../older-checkout # the same harness against another tree"
        ),
    )
    w = p.add_argument_group("workload")
    w.add_argument(
        "--mode",
        action="append",
        metavar="MODE[@RATE]",
        help="single, batch, stream, fanout or all; comma-separated or repeated, one table row each (default single)",
    )
    w.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="R",
        help="open loop: offer R msg/s steadily (latency counted from the scheduled time) for modes "
        "without their own @RATE; 0 = closed loop (default 0)",
    )
    w.add_argument("--devices", type=_positive, default=1000, metavar="N", help="idle devices connected (default 1000)")
    w.add_argument(
        "--messages",
        type=_positive,
        default=10_000,
        metavar="M",
        help="messages per run, round robin over the devices (default 10000)",
    )
    w.add_argument(
        "--fanout-sends",
        type=_positive,
        default=20,
        metavar="S",
        help="fanout mode: Sends to the one user; each reaches every device (default 20)",
    )
    w.add_argument(
        "--payload-bytes",
        type=int,
        default=100,
        metavar="B",
        help=f"payload size, at least {PAYLOAD_HEADER_BYTES} (default 100)",
    )
    w.add_argument(
        "--inflight",
        type=_positive,
        metavar="C",
        help="calls in flight (stream: unanswered requests); default per mode: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_INFLIGHT.items()),
    )
    w.add_argument(
        "--batch-size", type=_positive, default=100, metavar="K", help="messages per SendBatch (default 100)"
    )
    w.add_argument(
        "--warmup",
        type=_non_negative,
        default=500,
        metavar="W",
        help="messages sent (same mode, closed loop) and delivered before the measured window; "
        "fanout sends 2 (default 500)",
    )
    w.add_argument(
        "--max-open",
        type=_positive,
        default=10_000,
        metavar="K",
        help="open loop: calls in flight before the generator falls behind schedule (default 10000)",
    )
    w.add_argument(
        "--runs", type=_positive, default=1, metavar="K", help="runs per mode; figures are medians (default 1)"
    )

    s = p.add_argument_group("server")
    s.add_argument(
        "--distributed",
        action="store_true",
        help="run `pushplat api`, `router` and `edge` as three processes on Redis + Kafka instead of `pushplat dev`",
    )
    s.add_argument(
        "--redis-url",
        metavar="URL",
        help="distributed: registry URL (redis:// or redis+cluster://); without it the bench starts a private Redis "
        "with scripts/services and stops it at the end",
    )
    s.add_argument(
        "--kafka-url",
        metavar="URL",
        help="distributed: queue URL (kafka://host:port); without it the bench starts a private Kafka likewise",
    )
    s.add_argument(
        "--internal-auth",
        choices=("secret", "mtls", "insecure"),
        default="secret",
        help="distributed: how router and edge authenticate each other on the delivery port: a fresh "
        "--internal-secret (default), mutual TLS with certificates made by openssl for the run, or "
        "--insecure-internal (to measure what the auth costs); servers older than internal auth get none",
    )
    s.add_argument(
        "--transport",
        choices=("grpc", "ws"),
        default="grpc",
        help="device transport: grpc (Edge.Connect) or ws (the edge's --ws-port: one binary WebSocket message per "
        "frame; reported as not supported when the server has no --ws-port) (default grpc)",
    )
    s.add_argument(
        "--pushplat-root",
        type=Path,
        default=ROOT,
        metavar="DIR",
        help="the pushplat checkout whose server is measured, e.g. an older worktree (default: this one)",
    )
    s.add_argument(
        "--floor",
        action="store_true",
        help="measure the stack's floor instead of pushplat: benchmarks/floor, a grpc.aio server that only "
        "parses each Send, writes one frame to the device and reads its ack, run on this checkout's Python; "
        "rows say setup floor (embedded modes only)",
    )
    s.add_argument(
        "--server-python",
        type=Path,
        metavar="PATH",
        help="Python that runs the server (default DIR/.venv/bin/python of --pushplat-root)",
    )
    s.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ROLE:ARG",
        help="extra argument for a server role (dev, api, router, edge or all), e.g. edge:--workers=2; repeatable",
    )

    h = p.add_argument_group("harness")
    h.add_argument(
        "--device-procs",
        type=_positive,
        default=1,
        metavar="K",
        help="load-generator processes the devices are spread over (default 1)",
    )
    h.add_argument(
        "--base-port",
        type=_positive,
        default=18100,
        metavar="P",
        help="server ports come from P..P+--port-span-1, each probed and locked for the run; below the "
        "kernel's ephemeral range so outgoing connections cannot take them (default 18100)",
    )
    h.add_argument(
        "--port-span", type=_positive, default=800, metavar="N", help="size of that port range (default 800)"
    )
    h.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="seconds a run may take to send and deliver (default 60 + M/200, plus M/R for an open loop)",
    )
    h.add_argument("--keep-logs", action="store_true", help="keep the log directory (kept anyway on failure)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.modes = parse_modes(args.mode or ["single"], args.rate)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    if args.payload_bytes < PAYLOAD_HEADER_BYTES:
        parser.error(f"--payload-bytes must be >= {PAYLOAD_HEADER_BYTES} (the bench tags each payload)")
    if (args.redis_url or args.kafka_url) and not args.distributed:
        parser.error("--redis-url and --kafka-url need --distributed")
    for item in args.server_arg:
        role, sep, _ = item.partition(":")
        if not sep or role not in ("dev", "api", "router", "edge", "all"):
            parser.error(f"--server-arg {item!r}: want ROLE:ARG with ROLE dev, api, router, edge or all")
    # The module the server roles run as (`python -m MODULE ROLE`), from the cwd pushplat_root.
    args.server_module = "pushplat"
    if args.floor:
        if args.distributed or args.transport != "grpc" or args.pushplat_root.resolve() != ROOT or args.server_arg:
            parser.error(
                "--floor measures the embedded gRPC stand-in: leave out --distributed, --transport ws, "
                "--pushplat-root and --server-arg"
            )
        # benchmarks/floor imports pushplat's own settings, so it runs on this checkout's venv.
        args.server_python = (args.server_python or ROOT / ".venv" / "bin" / "python").absolute()
        args.pushplat_root, args.server_module = FLOOR_ROOT.parent, FLOOR_ROOT.name
        checkout = ROOT
    else:
        args.pushplat_root = checkout = args.pushplat_root.resolve()
        if not (checkout / "pushplat").is_dir():
            parser.error(f"--pushplat-root {checkout} is not a pushplat checkout (no pushplat/ package)")
        # absolute(), not resolve(): a venv's python is a symlink, and following it leaves the venv.
        args.server_python = (args.server_python or checkout / ".venv" / "bin" / "python").absolute()
    if not os.access(args.server_python, os.X_OK):
        parser.error(
            f"no Python at {args.server_python}: run scripts/test or scripts/run once in "
            f"{checkout} to create its .venv, or pass --server-python"
        )
    return args


# -- /proc -----------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, all threads, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (a role's --workers children count as the role)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except (OSError, ValueError):
                pass
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def listening_pid(port: int) -> int | None:
    """The pid that listens on a loopback TCP port (for the CPU of a Redis or Kafka we did not start)."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inode = parts[9]
                break
        if inode:
            break
    if not inode:
        return None
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


# -- ports -----------------------------------------------------------------------------


class PortPool:
    """Ports from a range the bench owns. Each is locked (a file lock, so two benches never
    pick the same one) and probed with bind() before use; bind(0) would hand out ports from
    the ephemeral range, which the machine's outgoing connections also use."""

    def __init__(self, base: int, span: int) -> None:
        self.base, self.span = base, span
        # Not named like the log dirs (pushplat-bench-*), which people clean up by glob.
        self.lock_dir = Path(tempfile.gettempdir()) / "pushplat-bench.port-locks"
        self.held: dict[int, int] = {}
        self.next = base

    def take(self, count: int) -> list[int]:
        ports: list[int] = []
        for _ in range(self.span):
            if len(ports) == count:
                return ports
            port = self.next
            self.next = self.base + (self.next + 1 - self.base) % self.span
            if port in self.held or port > 65535:
                continue
            # Made on every take: a tmp cleaner may remove it between runs (a held lock survives).
            self.lock_dir.mkdir(exist_ok=True)
            fd = os.open(self.lock_dir / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if not self._free(port):
                os.close(fd)
                continue
            self.held[port] = fd
            ports.append(port)
        if len(ports) == count:
            return ports
        raise BenchError(f"no {count} free ports in {self.base}..{self.base + self.span - 1}; try another --base-port")

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def release(self, ports: Iterable[int]) -> None:
        for port in ports:
            fd = self.held.pop(port, None)
            if fd is not None:
                os.close(fd)

    def close(self) -> None:
        self.release(list(self.held))


# -- the load generator ----------------------------------------------------------------


def build_loadgen() -> Path:
    """Build benchmarks/loadgen once per source version into the cache (never the tree)."""
    go = shutil.which("go")
    if go is None:
        raise BenchError("the load generator needs Go (`go` on PATH) to build benchmarks/loadgen")
    digest = hashlib.sha256()
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest.update(version.encode())
    for base in (LOADGEN_SRC, SDK_GO):
        for path in sorted(base.rglob("*")):
            if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    cache = Path(os.environ.get("PUSHPLAT_CACHE_DIR") or Path.home() / ".cache" / "pushplat") / "bench"
    binary = cache / f"loadgen-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".build-{os.getpid()}"
    log(f"building the load generator into {binary}")
    result = subprocess.run(
        [go, "build", "-buildvcs=false", "-trimpath", "-o", str(tmp), "."],
        cwd=LOADGEN_SRC,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"go build of benchmarks/loadgen failed:\n{result.stderr.strip()}")
    tmp.replace(binary)  # atomic: a concurrent bench sees the whole binary or none
    return binary


class Agent:
    """One load-generator process: commands as lines on stdin, one JSON reply per line."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the bench, which stops us in order
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} gave no answer within {timeout:g}s") from None
        if line is None:
            self.proc.wait(5)
            err = self.stderr_path.read_text(errors="replace").strip()[-2000:]
            raise BenchError(f"{self.name} exited with status {self.proc.returncode}: {err or '(no output)'}")
        return json.loads(line)

    def ask(self, command: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # reply() reports how it died
        return self.reply(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit", timeout=10.0)
            except BenchError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


# -- the server under test -------------------------------------------------------------


@dataclass
class Role:
    name: str
    argv: list[str]
    log_path: Path
    holds_devices: bool
    proc: subprocess.Popen[bytes] | None = None

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []


class ServerFlags:
    """Which options each role of the measured checkout has (read from its --help), so one
    harness can drive older and newer servers."""

    def __init__(self, python: Path, root: Path, module: str) -> None:
        self.python, self.root, self.module = python, root, module
        self.cache: dict[str, set[str]] = {}

    def of(self, role: str) -> set[str]:
        if role not in self.cache:
            result = subprocess.run(
                [str(self.python), "-m", self.module, role, "--help"],
                cwd=self.root,
                env=server_env(),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if result.returncode != 0:
                raise BenchError(f"`pushplat {role} --help` failed in {self.root}: {result.stderr.strip()[-500:]}")
            self.cache[role] = {word.rstrip(",=") for word in result.stdout.split() if word.startswith("--")}
        return self.cache[role]


def internal_auth_flags(args: argparse.Namespace, have: set[str]) -> list[str]:
    """Router and edge flags for the delivery port's auth, as far as the server has them."""
    if "--internal-secret" not in have:
        return []  # a server from before internal auth: nothing to pass
    if args.internal_auth == "insecure":
        return ["--insecure-internal"]
    if args.internal_auth == "secret":
        if not getattr(args, "internal_secret", None):
            args.internal_secret = secrets.token_hex(32)  # one per bench: routers and edges share it
        return ["--internal-secret", args.internal_secret]
    pki = args.log_dir / "pki"
    if not (pki / "role.crt").exists():
        make_internal_pki(pki)
    flags = ["--internal-tls-cert", str(pki / "role.crt"), "--internal-tls-key", str(pki / "role.key")]
    return [*flags, "--internal-ca", str(pki / "ca.crt")]


def make_internal_pki(pki: Path) -> None:
    """A CA and one certificate (for 127.0.0.1, client and server use) that every role shares."""
    pki.mkdir(exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*argv: str) -> None:
        result = subprocess.run(["openssl", *argv], cwd=pki, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchError(f"openssl {argv[0]} failed (--internal-auth mtls): {result.stderr.strip()}")

    openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *ec, "-subj", "/CN=role", "-keyout", "role.key", "-out", "role.csr")
    (pki / "role.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    sign = ["-req", "-in", "role.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
    openssl("x509", *sign, "-extfile", "role.ext", "-out", "role.crt")


def server_env() -> dict[str, str]:
    # PUSHPLAT_* settings from the caller's shell (a secret, a port) would change what is
    # measured; everything the bench relies on is on the command line.
    return {k: v for k, v in os.environ.items() if not k.startswith("PUSHPLAT_")}


@dataclass
class Services:
    """Redis and Kafka for --distributed: given URLs, or private ones from scripts/services."""

    redis_url: str
    kafka_url: str
    state_dir: Path | None = None  # set when we started them
    pids: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, args: argparse.Namespace, log_dir: Path) -> Services:
        services = cls(args.redis_url or "", args.kafka_url or "")
        if not (args.redis_url and args.kafka_url):
            services.state_dir = log_dir / "services"
            services.state_dir.mkdir()
            scripts = ROOT / "scripts" / "services"
            for name, url in (("redis", args.redis_url), ("kafka", args.kafka_url)):
                if url:
                    continue
                log(f"starting a private {name} in {services.state_dir}")
                result = subprocess.run(
                    [str(scripts / f"{name}.sh"), "start", str(services.state_dir)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    services.stop()
                    raise BenchError(f"scripts/services/{name}.sh start failed:\n{result.stderr.strip()[-1500:]}")
            env = dict(
                line.removeprefix("export ").split("=", 1)
                for line in (services.state_dir / "env").read_text().splitlines()
                if line.startswith("export ")
            )
            services.redis_url = services.redis_url or env["PUSHPLAT_TEST_REDIS_URL"]
            services.kafka_url = services.kafka_url or env["PUSHPLAT_TEST_KAFKA_URL"]
        for name, url in (("redis", services.redis_url), ("kafka", services.kafka_url)):
            # Their CPU is reported beside the server's (best effort: only a local listener).
            hostport = url.split("://", 1)[-1].split("/", 1)[0].split(",")[0]
            host, _, port = hostport.rpartition(":")
            if host in ("127.0.0.1", "localhost") and port.isdigit() and (pid := listening_pid(int(port))):
                services.pids[name] = pid
        return services

    def stop(self) -> None:
        if self.state_dir is not None:
            log("stopping the private Redis/Kafka")
            subprocess.run([str(ROOT / "scripts" / "services" / "down.sh"), str(self.state_dir)], capture_output=True)
            self.state_dir = None


class Server:
    """The pushplat role processes of one run."""

    def __init__(self, args: argparse.Namespace, flags: ServerFlags, ports: PortPool, log_dir: Path, tag: str) -> None:
        self.args, self.log_dir = args, log_dir
        self.ports = ports
        edge_port, api_port, delivery_port, ws_port = self.leased = ports.take(4)
        self.edge = f"127.0.0.1:{edge_port}"
        self.api = f"127.0.0.1:{api_port}"
        self.ws = f"127.0.0.1:{ws_port}"
        base = [str(args.server_python), "-m", args.server_module]
        # warning: per-session info lines would cost the CPU we are measuring. A 1 s drain:
        # the devices are closed before the server stops, so a longer one only wastes time.
        wanted = {
            "--host": "127.0.0.1",
            "--log-level": "warning",
            "--metrics-port": "0",
            "--drain-seconds": "1",
            "--edge-port": str(edge_port),
            "--delivery-port": str(delivery_port),
            "--api-port": str(api_port),
        }
        # The WebSocket port only when measuring it (pushplat dev would otherwise take 50054).
        wanted["--ws-port"] = str(ws_port) if args.transport == "ws" else "0"
        if args.distributed:
            backends = {
                "--registry": args.services.redis_url,
                "--queue": args.services.kafka_url,
                # Fresh topics per run: no other run's messages or consumer offsets.
                "--topic-prefix": f"bench-{tag}",
            }
            names = ["edge", "api", "router"]
        else:
            backends, names = {}, ["dev"]
        self.roles: list[Role] = []
        for name in names:
            have = flags.of(name)
            argv = [*base, name]
            for flag, value in {**wanted, **backends}.items():
                if flag in have:
                    argv += [flag, value]
            if args.distributed and name in ("edge", "router"):
                argv += internal_auth_flags(args, have)
            for item in args.server_arg:
                role, _, extra = item.partition(":")
                if role in (name, "all"):
                    argv.append(extra)
            self.roles.append(Role(name, argv, log_dir / f"{name}-{tag}.log", holds_devices=name in ("dev", "edge")))
        missing = [f for f in ("--edge-port", "--api-port") if not any(f in flags.of(r.name) for r in self.roles)]
        if missing:
            raise BenchError(f"the server in {args.pushplat_root} has no {' or '.join(missing)} option")

    def supports_ws(self) -> bool:
        return any("--ws-port" in r.argv for r in self.roles if r.holds_devices)

    def start(self) -> None:
        for role in self.roles:
            log(f"starting {self.args.server_module} {' '.join(role.argv[3:])}")
            with role.log_path.open("wb") as out:
                role.proc = subprocess.Popen(
                    role.argv,
                    cwd=self.args.pushplat_root,
                    env=server_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def check_alive(self) -> None:
        for role in self.roles:
            if role.proc is not None and role.proc.poll() is not None:
                tail = "\n".join(role.log_path.read_text(errors="replace").splitlines()[-20:])
                raise BenchError(f"pushplat {role.name} exited with status {role.proc.returncode}:\n{tail}")

    def wait_healthy(self, loadgen: Path) -> None:
        addresses = [self.edge, self.api]
        result = subprocess.run(
            [str(loadgen), "health", "-timeout", "60s", *dict.fromkeys(addresses)],
            capture_output=True,
            text=True,
            check=False,
        )
        self.check_alive()
        if result.returncode != 0:
            raise BenchError(f"server not healthy: {result.stderr.strip()}")

    def processes(self) -> dict[str, list[int]]:
        return {r.name: r.pids() for r in self.roles}

    def rss_of_edges(self) -> int:
        return sum(rss_kib(pid) or 0 for r in self.roles if r.holds_devices for pid in r.pids())

    def stop(self) -> None:
        live = [r.proc for r in self.roles if r.proc is not None and r.proc.poll() is None]
        for proc in live:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the role and any workers it forked
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15.0
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {proc.pid} ignored SIGTERM; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.ports.release(self.leased)

    def unexpected_log_lines(self) -> list[str]:
        found = []
        for role in self.roles:
            try:
                text = role.log_path.read_text(errors="replace")
            except OSError:
                continue
            found += [
                f"{role.name}: {ln}"
                for ln in text.splitlines()
                if ln.strip() and not any(e in ln for e in EXPECTED_LOG)
            ]
        return found


# -- one run ---------------------------------------------------------------------------


def wait_until(what: str, check: Any, timeout: float, server: Server, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        server.check_alive()
        if check():
            return True
        if time.monotonic() > deadline:
            log(f"timed out after {timeout:g}s waiting for {what}")
            return False
        time.sleep(every)


def settled_rss(server: Server, timeout: float = 5.0) -> int:
    """Server RSS once it stops moving (two reads 0.25 s apart within 0.5 %), bounded."""
    deadline = time.monotonic() + timeout
    last = server.rss_of_edges()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = server.rss_of_edges()
        if abs(now - last) <= 0.005 * max(now, 1):
            return now
        last = now
    return last


class Devices:
    """The device agents of one run, queried together."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents = agents

    def status(self) -> dict[str, Any]:
        total: dict[str, Any] = {"errors": []}
        for agent in self.agents:
            for key, value in agent.ask("status").items():
                if key == "errors":
                    total["errors"] += value or []
                else:
                    total[key] = total.get(key, 0) + value
        return total

    def count(self, key: str) -> int:
        return int(self.status()[key])

    def command(self, command: str) -> list[dict[str, Any]]:
        return [agent.ask(command, timeout=120.0) for agent in self.agents]

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return None
    return sorted_values[max(1, math.ceil(p / 100 * len(sorted_values))) - 1]


def run_once(
    args: argparse.Namespace, spec: ModeSpec, loadgen: Path, flags: ServerFlags, ports: PortPool
) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    fanout = spec.mode == "fanout"
    n = args.devices
    m = args.fanout_sends if fanout else args.messages
    targets = n if fanout else 1  # deliveries per accepted message
    inflight = args.inflight or DEFAULT_INFLIGHT[spec.mode]
    setup = "floor" if args.floor else "distributed" if args.distributed else "embedded"
    base = {"mode": spec.label, "setup": setup, "devices": n, "messages": m}
    # An open loop has no fixed number in flight: up to --max-open calls, as the schedule needs.
    base |= {"inflight": None if spec.rate else inflight, "offered_per_s": spec.rate or None}
    base |= {"transport": args.transport, "internal_auth": args.internal_auth if args.distributed else None}
    server = Server(args, flags, ports, args.log_dir, tag)
    if args.transport == "ws" and not server.supports_ws():
        server.ports.release(server.leased)
        return base | {"unsupported": f"not supported by this server: no --ws-port in {args.pushplat_root}"}
    # Unique ids per run: a Redis shared between runs still holds the last run's routes.
    device_prefix, user = f"b{tag}-d", f"b{tag}-fan"
    devices: Devices | None = None
    sender: Agent | None = None
    server.start()
    try:
        server.wait_healthy(loadgen)
        rss_idle = settled_rss(server)
        edge = server.edge if args.transport == "grpc" else f"ws://{server.ws}"
        procs = min(args.device_procs, n)
        bounds = [n * k // procs for k in range(procs + 1)]
        log(f"{spec.label}: connecting {n} devices from {procs} load-generator process(es)")
        t0 = time.monotonic()
        agents = []
        for k in range(procs):
            argv = [str(loadgen), "devices", "-edge", edge, "-transport", args.transport, "-first", str(bounds[k])]
            argv += [
                "-count",
                str(bounds[k + 1] - bounds[k]),
                "-device-prefix",
                device_prefix,
                "-user-prefix",
                f"b{tag}-u",
            ]
            if fanout:
                argv += ["-user", user]
            agents.append(Agent(f"devices{k}-{tag}", argv, args.log_dir))
        devices = Devices(agents)
        for agent in agents:
            ready = agent.reply(timeout=90.0 + n / 50)
            if ready.get("event") != "ready":
                raise BenchError(f"devices did not connect: {ready.get('error')}: {ready.get('errors', [])[:3]}")
        connect_s = time.monotonic() - t0
        rss_connected = settled_rss(server)
        server.check_alive()

        argv = [str(loadgen), "send", "-api", server.api, "-mode", "single" if fanout else spec.mode]
        argv += ["-devices", str(n), "-device-prefix", device_prefix, "-payload-bytes", str(args.payload_bytes)]
        argv += ["-inflight", str(inflight), "-batch-size", str(args.batch_size), "-max-open", str(args.max_open)]
        argv += ["-rate", str(spec.rate)]
        timeout = args.timeout or 60.0 + m / 200 + (m / spec.rate if spec.rate else 0.0)
        # A stream carries the whole run, so its deadline is the run's, not one call's.
        argv += ["-timeout", f"{timeout:.0f}s" if spec.mode == "stream" else "30s"]
        if fanout:
            argv += ["-user", user]
        sender = Agent(f"sender-{tag}", argv, args.log_dir)
        sender.reply(timeout=30.0)

        # The pipeline works end to end (with Kafka: the router's consumer group has joined).
        deadline = time.monotonic() + 90.0
        while True:
            before = devices.count("probes")
            reply = sender.ask("probe")
            if not reply.get("ok"):
                log(f"probe send failed: {reply.get('error')}; retrying")
            if wait_until("a probe", lambda b=before: devices.count("probes") > b, 2.0, server, every=0.05):
                break
            if time.monotonic() > deadline:
                raise BenchError("no probe message reached a device within 90 s")
        warm = min(2, m) if fanout else args.warmup
        if warm:
            reply = sender.ask(f"warmup {warm}", timeout=120.0)
            if reply.get("unsupported"):
                return base | {"unsupported": f"not supported by this server: {reply['unsupported']}"}
            expected_warm = reply["accepted"] * targets
            wait_until("warm-up deliveries", lambda: devices.count("warmup") >= expected_warm, 60.0, server)

        # The measured window: CPU of every server process (and Redis/Kafka, and ours).
        watched = {f"server:{name}": pids for name, pids in server.processes().items()}
        watched |= {f"service:{name}": [pid] for name, pid in getattr(args.services, "pids", {}).items()}
        watched |= {"client:devices": [a.proc.pid for a in agents], "client:sender": [sender.proc.pid]}
        devices.command("reset")
        ticks0 = {k: [cpu_ticks(p) for p in pids] for k, pids in watched.items()}
        mach0 = machine_ticks()
        deadline = time.monotonic() + timeout
        # Fan-out sends each message once the last one reached every device, so its latency is
        # the spread of one broadcast, not a queue of them; other modes send the run in one go.
        steps = [(first, 1) for first in range(m)] if fanout else [(0, m)]
        parts: list[dict[str, Any]] = []
        for first, count in steps:
            part = sender.ask(f"run {count} {first}", timeout=max(5.0, deadline - time.monotonic()))
            if part.get("unsupported"):
                return base | {"unsupported": f"not supported by this server: {part['unsupported']}"}
            parts.append(part)
            expected = sum(p["accepted"] for p in parts) * targets
            left = max(5.0, deadline - time.monotonic())
            wait_until(f"{expected} deliveries", lambda e=expected: devices.count("measured") >= e, left, server)
        result = merge_parts(parts)
        time.sleep(0.05)  # the last acks reach the server: they are part of each message's cost
        ticks1 = {k: [cpu_ticks(p) for p in pids] for k, pids in watched.items()}
        mach1 = machine_ticks()
        status = devices.status()
        dumps = devices.command("dump")
        lines = server.unexpected_log_lines()
    finally:
        if sender is not None:
            sender.stop()
        if devices is not None:
            devices.stop()
        server.stop()

    cpu_s = {
        k: sum((b - a) for a, b in zip(ticks0[k], ticks1[k], strict=True) if a is not None and b is not None) / _CLK_TCK
        for k in watched
    }
    return (
        base
        | figures(result, dumps, status, cpu_s, mach1, mach0, targets, m)
        | {
            "connect_s": round(connect_s, 2),
            "server_rss_kib": {"idle": rss_idle, "connected": rss_connected},
            "rss_per_conn_kib": round((rss_connected - rss_idle) / n, 1) if rss_idle and rss_connected else None,
            "server_log_unexpected": lines[:5],
            "server_log_unexpected_count": len(lines),
        }
    )


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One sender result from the steps of a run (fan-out sends its messages one by one)."""
    if len(parts) == 1:
        return parts[0]
    errors: dict[str, int] = {}
    for part in parts:
        for code, count in (part.get("errors") or {}).items():
            errors[code] = errors.get(code, 0) + count
    # Each step is one call, so its median is that call's duration.
    rpc = sorted(p["rpc_p50_ms"] for p in parts if p.get("calls"))
    return {
        "accepted": sum(p["accepted"] for p in parts),
        "errors": errors,
        "first_error": next((p["first_error"] for p in parts if p.get("first_error")), None),
        "t_call": [t for p in parts for t in p.get("t_call") or []],
        "start": parts[0]["start"],
        "end": parts[-1]["end"],
        "rpc_p50_ms": percentile(rpc, 50),
        "rpc_p99_ms": percentile(rpc, 99),
        "behind_schedule_max_ms": max(p.get("behind_schedule_max_ms") or 0 for p in parts),
    }


def figures(
    result: dict[str, Any],
    dumps: list[dict[str, Any]],
    status: dict[str, Any],
    cpu_s: dict[str, float],
    mach1: tuple[int, int],
    mach0: tuple[int, int],
    targets: int,
    m: int,
) -> dict[str, Any]:
    t_call = result.get("t_call") or []
    seen: set[tuple[int, int]] = set()
    latencies: list[float] = []
    duplicates = 0
    last_recv = 0
    for dump in dumps:
        for dev, seq, t in zip(dump.get("dev") or [], dump.get("seq") or [], dump.get("t") or [], strict=True):
            if seq >= m or not t_call[seq]:
                continue  # not a message the sender saw accepted
            if (dev, seq) in seen:
                duplicates += 1
                continue
            seen.add((dev, seq))
            latencies.append((t - t_call[seq]) / 1e6)
            last_recv = max(last_recv, t)
    latencies.sort()
    delivered = len(seen)
    elapsed_s = (last_recv - result["start"]) / 1e9 if delivered else None
    busy, total = mach1[0] - mach0[0], mach1[1] - mach0[1]
    cores = os.cpu_count() or 1
    wall_s = total / _CLK_TCK / cores if total else 0.0
    ours = sum(cpu_s.values())
    server_total = sum(v for k, v in cpu_s.items() if k.startswith("server:"))

    def us_per_msg(seconds: float) -> float | None:
        return round(seconds * 1e6 / delivered, 1) if delivered else None

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    return {
        "accepted": result["accepted"],
        "send_errors": result.get("errors") or {},
        "first_send_error": result.get("first_error") or None,
        "expected": result["accepted"] * targets,
        "delivered": delivered,
        "lost": result["accepted"] * targets - delivered,
        "duplicates": duplicates,
        "strays": status.get("strays", 0),
        "device_errors": status.get("errors", [])[:5],
        "elapsed_s": ms(elapsed_s),
        "delivered_per_s": round(delivered / elapsed_s) if elapsed_s else None,
        "latency_ms": {
            "p50": ms(percentile(latencies, 50)),
            "p90": ms(percentile(latencies, 90)),
            "p99": ms(percentile(latencies, 99)),
            "max": ms(latencies[-1] if latencies else None),
        },
        "send_rpc_ms": {"p50": ms(result.get("rpc_p50_ms")), "p99": ms(result.get("rpc_p99_ms"))},
        "behind_schedule_max_ms": ms(result.get("behind_schedule_max_ms")),
        "messages_per_frame": round(delivered / status["frames"], 2) if status.get("frames") else None,
        "cpu_us_per_msg": {
            "server_total": us_per_msg(server_total),
            "server": {k.split(":", 1)[1]: us_per_msg(v) for k, v in cpu_s.items() if k.startswith("server:")},
            "services": {k.split(":", 1)[1]: us_per_msg(v) for k, v in cpu_s.items() if k.startswith("service:")},
            "clients": {k.split(":", 1)[1]: us_per_msg(v) for k, v in cpu_s.items() if k.startswith("client:")},
        },
        "cpu_s": {k: round(v, 2) for k, v in cpu_s.items()},
        "machine_busy_cores": round(busy / _CLK_TCK / wall_s, 2) if wall_s else None,
        # Everything else on the shared machine (a colleague's tests) during the window.
        "other_processes_cores": round(max(0.0, busy / _CLK_TCK - ours) / wall_s, 2) if wall_s else None,
    }


# -- the report ------------------------------------------------------------------------


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row from several runs: the median of every figure."""

    def med(path: Sequence[str]) -> float | None:
        values = []
        for run in runs:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float):
                values.append(value)
        return round(statistics.median(values), 2) if values else None

    first = runs[0]
    row = {k: first[k] for k in ("mode", "setup", "devices", "messages", "inflight", "offered_per_s", "transport")}
    if "unsupported" in first:
        return row | {"unsupported": first["unsupported"]}
    row |= {
        "runs": len(runs),
        "delivered_per_s": med(["delivered_per_s"]),
        "p50_ms": med(["latency_ms", "p50"]),
        "p99_ms": med(["latency_ms", "p99"]),
        "server_cpu_us_per_msg": med(["cpu_us_per_msg", "server_total"]),
        "server_cpu_us_per_msg_by_process": {
            name: med(["cpu_us_per_msg", "server", name]) for name in first["cpu_us_per_msg"]["server"]
        },
        "services_cpu_us_per_msg": {
            name: med(["cpu_us_per_msg", "services", name]) for name in first["cpu_us_per_msg"]["services"]
        },
        "client_cpu_us_per_msg": {
            name: med(["cpu_us_per_msg", "clients", name]) for name in first["cpu_us_per_msg"]["clients"]
        },
        "rss_per_conn_kib": med(["rss_per_conn_kib"]),
        "messages_per_frame": med(["messages_per_frame"]),
        "other_processes_cores": med(["other_processes_cores"]),
        "lost": sum(r["lost"] for r in runs),
        "duplicates": sum(r["duplicates"] for r in runs),
        "send_errors": sum(sum(r["send_errors"].values()) for r in runs),
        "server_log_lines": sum(r["server_log_unexpected_count"] for r in runs),
    }
    return row


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    probe = (
        "import json, platform\nfrom importlib import metadata\n"
        "def v(n):\n    try:\n        return metadata.version(n)\n    except metadata.PackageNotFoundError:\n"
        "        return 'not installed'\n"
        "print(json.dumps({'python': platform.python_version(), **{n: v(n) for n in "
        "('grpcio', 'protobuf', 'uvloop', 'kafka-python', 'redis', 'pushplat')}}))"
    )
    versions = json.loads(
        subprocess.run([str(args.server_python), "-c", probe], capture_output=True, text=True, check=True).stdout
    )
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout.split()
    commit = subprocess.run(
        ["git", "-C", str(args.pushplat_root), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "go": go[2] if len(go) > 2 else "unknown",
        "pushplat_root": str(FLOOR_ROOT if args.floor else args.pushplat_root),
        "pushplat_commit": commit or "unknown",
        "loadavg": Path("/proc/loadavg").read_text().split()[0],
        **versions,
    }


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def lost_text(r: dict[str, Any]) -> str:
    if not (r["lost"] or r["duplicates"] or r["send_errors"]):
        return "0"
    return f"{r['lost']} lost, {r['duplicates']} dup, {r['send_errors']} send errors"


def render_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    header = [
        "mode",
        "setup",
        "devices",
        "messages",
        "in flight",
        "offered/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/msg",
        "CPU µs/msg per process",
        "RSS/conn KiB",
        "lost",
    ]
    body = []
    for r in rows:
        start = [
            r["mode"],
            r["setup"],
            fmt(r["devices"]),
            fmt(r["messages"]),
            "open" if r["offered_per_s"] else fmt(r["inflight"]),
            fmt(r["offered_per_s"]),
        ]
        if "unsupported" in r:
            body.append([*start, r["unsupported"]])
            continue
        per = " ".join(f"{k} {fmt(v)}" for k, v in r["server_cpu_us_per_msg_by_process"].items())
        body.append(
            [
                *start,
                fmt(r["delivered_per_s"]),
                fmt(r["p50_ms"], 1),
                fmt(r["p99_ms"], 1),
                fmt(r["server_cpu_us_per_msg"]),
                per,
                fmt(r["rss_per_conn_kib"], 1),
                lost_text(r),
            ]
        )
    # An unsupported row's last cell is a sentence that runs past the columns it replaces.
    widths = [
        max([len(h), *(len(b[i]) for b in body if i < len(b) - (len(b) < len(header)))]) for i, h in enumerate(header)
    ]
    lines = [
        f"pushplat bench, {machine['date']}: {machine['pushplat_root']} at {machine['pushplat_commit']}",
        f"machine: {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']}, "
        f"load average {machine['loadavg']} at start",
        f"server: Python {machine['python']}, grpcio {machine['grpcio']}, protobuf {machine['protobuf']}, "
        f"uvloop {machine['uvloop']}; clients: Go load generator ({machine['go']})",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
    ]
    for b in body:
        if len(b) == len(header):
            lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(b[:-1], widths, strict=False)) + "  " + b[-1])
    notes = []
    for r in rows:
        if "unsupported" in r:
            continue
        services = ", ".join(f"{k} {fmt(v)}" for k, v in r["services_cpu_us_per_msg"].items())
        clients = ", ".join(f"{k} {fmt(v)}" for k, v in r["client_cpu_us_per_msg"].items())
        notes.append(
            f"  {r['mode']} ({r['setup']}): median of {r['runs']}; clients {clients} µs/msg"
            + (f"; Redis/Kafka {services} µs/msg" if services else "")
            + f"; {fmt(r['messages_per_frame'], 2)} msgs/frame; other processes used "
            f"{fmt(r['other_processes_cores'], 2)} cores"
            + (f"; {r['server_log_lines']} unexpected server log lines (in the JSON)" if r["server_log_lines"] else "")
        )
    if notes:
        lines += ["", "CPU µs/msg is server CPU (utime+stime from /proc, all threads) per delivered message.", *notes]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.log_dir = Path(tempfile.mkdtemp(prefix="pushplat-bench-"))
    args.services = None
    ports = PortPool(args.base_port, args.port_span)
    failed = True
    rows: list[dict[str, Any]] = []
    all_runs: list[list[dict[str, Any]]] = []
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: every process we started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        loadgen = build_loadgen()
        flags = ServerFlags(args.server_python, args.pushplat_root, args.server_module)
        machine = machine_info(args)
        if args.distributed:
            args.services = Services.start(args, args.log_dir)
        for spec in args.modes:
            runs = []
            for k in range(args.runs):
                log(f"{spec.label}: run {k + 1} of {args.runs}")
                run = run_once(args, spec, loadgen, flags, ports)
                runs.append(run)
                if "unsupported" in run:
                    log(f"{spec.label}: {run['unsupported']}")
                    break
                cpu = run["cpu_us_per_msg"]["server_total"]
                log(
                    f"{spec.label}: {run['delivered']}/{run['expected']} delivered, {fmt(run['delivered_per_s'])}/s, "
                    f"p99 {fmt(run['latency_ms']['p99'], 1)} ms, server {fmt(cpu)} µs/msg"
                )
            rows.append(median_row(runs))
            all_runs.append(runs)
        failed = False
    except BenchError as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scripts/bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.services is not None:
            args.services.stop()
        ports.close()
        if failed or args.keep_logs:
            print(f"scripts/bench: logs kept in {args.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(args.log_dir, ignore_errors=True)
    print(render_table(rows, machine), flush=True)
    settings = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("services", "modes", "log_dir", "internal_secret")
    }
    print(json.dumps({"machine": machine, "settings": settings, "rows": rows, "runs": all_runs}), flush=True)
    complete = all("unsupported" in r or (r["lost"] == 0 and r["send_errors"] == 0) for r in rows)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
