#!/usr/bin/env python3
"""Topic fan-out, measured: N devices subscribed to one topic across E edges, one Send.

Distributed mode on Redis + Kafka: one api, one router and E edges, each its own process; the
devices are the Go load generator (benchmarks/loadgen ``devices -topic``), in their own
processes, each device on its own TCP connection, subscribed over its stream. Then one
``Push.Send(topic=...)``; the figures are the time from that call until 50 %, 99 % and 100 % of
the devices have the message (CLOCK_MONOTONIC in every process, so the times compare), and the
server CPU (every pushplat process, from /proc) per delivered frame over that window.

    .venv/bin/python benchmarks/topic_fanout.py --devices 10000 --edges 2
    .venv/bin/python benchmarks/topic_fanout.py --redis-url redis://… --kafka-url kafka://…

Prints one table, then one JSON line. Not a test (tests/e2e/test_topics_fanout.py runs a
smaller one with a bound).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (  # a sibling script, not a package
    _CLK_TCK,
    Agent,
    BenchError,
    Services,
    build_loadgen,
    cpu_ticks,
    descendants,
    log,
    machine_ticks,
    percentile,
    server_env,
)

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_MAGIC = b"PPB1"  # benchmarks/loadgen/main.go: magic, kind (0 = measured), sequence number


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/topic_fanout.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=10_000, help="devices subscribed to the topic (default 10000)")
    p.add_argument("--edges", type=int, default=2, help="edge processes (default 2)")
    p.add_argument("--agents-per-edge", type=int, default=2, help="load-generator processes per edge (default 2)")
    p.add_argument("--sends", type=int, default=3, help="topic messages, one after another (default 3)")
    p.add_argument("--payload-bytes", type=int, default=64, help="payload size (default 64)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every device per send")
    p.add_argument("--redis-url", default="", help="use this Redis (default: a private one from scripts/services)")
    p.add_argument("--kafka-url", default="", help="use this Kafka (default: a private one from scripts/services)")
    p.add_argument("--log-dir", type=Path, default=None, help="where role logs go (default: a temp dir)")
    p.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python", help="the server's python")
    return p


class Roles:
    """api, router and edges as processes on the given Redis and Kafka."""

    def __init__(self, args: argparse.Namespace, services: Services, log_dir: Path) -> None:
        prefix = f"fan{secrets.token_hex(3)}"
        secret = secrets.token_hex(32)
        registry = f"{services.redis_url}{'&' if '?' in services.redis_url else '?'}prefix={prefix}"
        common = ["--registry", registry, "--queue", services.kafka_url, "--topic-prefix", prefix]
        common += ["--host", "127.0.0.1", "--log-level", "warning"]
        self.api = f"127.0.0.1:{free_port()}"
        self.edges = [f"127.0.0.1:{free_port()}" for _ in range(args.edges)]
        specs = [("api", ["api", "--api-port", self.api.rsplit(":", 1)[1]])]
        specs.append(("router", ["router", "--internal-secret", secret]))
        for i, edge in enumerate(self.edges):
            specs.append(
                (
                    f"edge{i}",
                    [
                        "edge",
                        "--edge-port",
                        edge.rsplit(":", 1)[1],
                        "--delivery-port",
                        str(free_port()),
                        "--edge-id",
                        f"{prefix}-edge{i}",
                        "--internal-secret",
                        secret,
                        "--drain-seconds",
                        "1",
                        # The connect burst of the bench is the point, not admission control.
                        "--max-connects-per-second",
                        "0",
                    ],
                )
            )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, argv in specs:
            out = (log_dir / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [str(args.python), "-m", "pushplat", *argv, *common],
                cwd=ROOT,
                env=server_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> list[int]:
        return [pid for proc in self.procs.values() for pid in descendants(proc.pid)]

    def ticks(self) -> int:
        return sum(cpu_ticks(pid) or 0 for pid in self.pids())

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"pushplat {name} exited with status {proc.returncode}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def topic_payload(size: int, seq: int) -> bytes:
    head = PAYLOAD_MAGIC + bytes([0]) + seq.to_bytes(4, "big")
    return head + b"x" * max(size - len(head), 0)


def send_topic(api: str, topic: str, payload: bytes) -> int:
    """One Push.Send to the topic; returns CLOCK_MONOTONIC ns just before the call."""
    import asyncio

    from pushplat_client import PushSender

    async def go() -> int:
        async with PushSender(api) as sender:
            await sender.get_subscriptions("warm-up")  # the channel is connected before the clock starts
            started = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            await sender.send(topic=topic, payload=payload, priority="high")
            return started

    return asyncio.run(go())


def wait_quiet(roles: Roles, busy_percent: float = 10.0, timeout: float = 60.0) -> float:
    """Wait (bounded) until every server process together uses under busy_percent of a core."""
    deadline = time.monotonic() + timeout
    while True:
        before = roles.ticks()
        time.sleep(0.5)
        used = (roles.ticks() - before) / _CLK_TCK / 0.5 * 100
        if used < busy_percent or time.monotonic() > deadline:
            return used


def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="pushplat-topic-fanout-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    loadgen = build_loadgen()
    services = Services.start(argparse.Namespace(redis_url=args.redis_url, kafka_url=args.kafka_url), log_dir)
    roles = agents = None
    try:
        roles = Roles(args, services, log_dir)
        health = subprocess.run(
            [str(loadgen), "health", "-timeout", "90s", roles.api, *roles.edges], capture_output=True, text=True
        )
        roles.check_alive()
        if health.returncode != 0:
            raise BenchError(f"server not healthy: {health.stderr.strip()}")
        topic = "bench.fanout"
        per_agent = [0] * (args.edges * args.agents_per_edge)
        for i in range(args.devices):
            per_agent[i % len(per_agent)] += 1
        agents, first = [], 0
        started = time.monotonic()
        for i, count in enumerate(per_agent):
            edge = roles.edges[i % args.edges]
            argv = [str(loadgen), "devices", "-edge", edge, "-first", str(first), "-count", str(count)]
            argv += ["-topic", topic, "-connect-timeout", "300s", "-device-prefix", f"fan{i}-"]
            agents.append(Agent(f"devices{i}", argv, log_dir))
            first += count
        for agent in agents:
            ready = agent.reply(timeout=330)
            if ready.get("event") != "ready":
                raise BenchError(f"{agent.name}: {ready}")
        log(f"{args.devices} devices connected and subscribed in {time.monotonic() - started:.1f}s")
        sends = []
        for seq in range(args.sends):
            # Each send is measured alone: first the server digests the last one (its acks and
            # receipts), and the router's list of live edges (at most 1 s old) has every edge.
            time.sleep(1.0)
            quiet = wait_quiet(roles)
            log(f"server quiet ({quiet:.0f}% of a core over 0.5 s) before send {seq}")
            before_ticks = roles.ticks()
            clients_before = sum(cpu_ticks(a.proc.pid) or 0 for a in agents)
            machine_before = machine_ticks()
            sent_ns = send_topic(roles.api, topic, topic_payload(args.payload_bytes, seq))
            deadline = time.monotonic() + args.timeout
            while True:
                roles.check_alive()
                got = sum(a.ask("status")["measured"] for a in agents)
                if got >= args.devices * (seq + 1) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            after_ticks = roles.ticks()
            clients_cpu = (sum(cpu_ticks(a.proc.pid) or 0 for a in agents) - clients_before) / _CLK_TCK
            busy = machine_ticks()
            machine_busy = (busy[0] - machine_before[0]) / max(busy[1] - machine_before[1], 1)
            times = sorted(
                t - sent_ns
                for a in agents
                for s, t in zip(*(lambda d: (d["seq"], d["t"]))(a.ask("dump", timeout=60)), strict=True)
                if s == seq
            )
            cpu_seconds = (after_ticks - before_ticks) / _CLK_TCK
            row = {
                "send": seq,
                "devices": args.devices,
                "received": len(times),
                "first_ms": _ms(times[0] if times else None),  # the pipeline up to the first write
                "p50_ms": _ms(percentile(times, 50)),
                "p99_ms": _ms(percentile(times, 99)),
                "p100_ms": _ms(times[-1] if times else None),
                "server_cpu_s": round(cpu_seconds, 3),
                # Includes the 50 ms polling tail after the last device: an upper bound.
                "server_cpu_us_per_frame": round(cpu_seconds * 1e6 / max(len(times), 1), 1),
                # The devices' own CPU (the Go load generator: reads and acks) on the same cores.
                "clients_cpu_s": round(clients_cpu, 3),
                # How busy the whole machine was meanwhile (other work shares these cores).
                "machine_busy_percent": round(100 * machine_busy),
                "load_average": round(os.getloadavg()[0], 1),
            }
            log(json.dumps(row))
            sends.append(row)
        return {"devices": args.devices, "edges": args.edges, "sends": sends, "log_dir": str(log_dir)}
    finally:
        for agent in agents or []:
            agent.stop()
        if roles is not None:
            roles.stop()
        services.stop()


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"topic_fanout: {exc}", file=sys.stderr)
        return 1
    print(
        f"{'send':>4} {'received':>9} {'p50 ms':>8} {'p99 ms':>8} {'p100 ms':>8} {'CPU us/frame':>12} "
        f"{'machine busy':>12} {'load':>5}"
    )
    for row in result["sends"]:
        print(
            f"{row['send']:>4} {row['received']:>9} {row['p50_ms']!s:>8} {row['p99_ms']!s:>8} "
            f"{row['p100_ms']!s:>8} {row['server_cpu_us_per_frame']!s:>12} "
            f"{row['machine_busy_percent']:>11}% {row['load_average']:>5}"
        )
    print(f"{os.cpu_count()} cores; {result['devices']} devices over {result['edges']} edges")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
