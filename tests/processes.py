"""The one harness for tests that run pushplat as OS processes.

``ProcessGroup`` owns every process a test starts (``pushplat dev`` servers, CLI clients such as
``pushplat listen``) and kills whatever still runs at the end, pass or fail. ``Deployment`` adds
the api, router and edge roles on shared Redis and Kafka, isolated by a unique prefix. Each role
writes stdout and stderr to its own log file; a role that exits while it is being waited for fails
the test at once with the tail of that log. ``service`` runs one of scripts/services/*.sh into a
private state dir, for tests that stop or break a backend.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import eventually, free_port, with_prefix

PUSHPLAT = [sys.executable, "-m", "pushplat"]
SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"


async def serving(port: int) -> bool:
    """Whether the gRPC health service on the port answers SERVING."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def scrape(port: int, host: str = "127.0.0.1") -> str:
    """The Prometheus text of the /metrics endpoint on the port (blocking: use asyncio.to_thread)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as reply:
        return reply.read().decode()


async def metrics_up(port: int) -> bool:
    try:
        await asyncio.to_thread(scrape, port)
    except OSError:
        return False
    return True


async def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, str, str]:
    """Run one `pushplat` command to its end: (exit code, stdout, stderr). Killed if it overruns."""
    proc = await asyncio.create_subprocess_exec(
        *PUSHPLAT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


class ExitedDuringStartup(AssertionError):
    """A role's process ended before it served."""


@dataclass
class Role:
    """One pushplat process (a role or `pushplat dev`), logging to log_dir/NAME.log."""

    name: str
    args: list[str]
    port: int = 0  # the gRPC port whose health says the role is up (0: none, e.g. a router)
    metrics_port: int = 0  # the /metrics port; without a gRPC port, it says the role is up
    delivery_port: int = 0  # an edge's internal Delivery port
    ws_port: int = 0  # an edge's WebSocket port (--ws-port), if it has one
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    log_path: Path | None = None
    log_offset: int = 0  # where this start's output begins in the log
    command: tuple[str, ...] = tuple(PUSHPLAT)  # what runs args (e.g. scripts/run instead of pushplat)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Where WebSocket devices connect; its HTTP side serves the demo page at /."""
        return f"ws://127.0.0.1:{self.ws_port}/connect"

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.ws_port}/"

    def health_ports(self) -> list[int]:
        return [self.port] if self.port else []

    async def start(self, log_dir: Path, timeout: float = 60) -> Role:
        """Start the process (the log is appended to on a restart) and wait until it is up."""
        self.log_path = log_dir / f"{self.name}.log"
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, *self.args, stdout=log, stderr=log, env={**os.environ, **self.env}
            )
        await self.wait_up(timeout)
        return self

    async def wait_up(self, timeout: float = 60) -> None:
        """Bounded wait until every health port serves (or /metrics answers); fails at once if the process exits."""
        ports = self.health_ports()
        if not ports and not self.metrics_port:
            return

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise ExitedDuringStartup(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ports:
                return all([await serving(port) for port in ports])
            return await metrics_up(self.metrics_port)

        await eventually(up, timeout, what=f"{self.name} to serve on {ports or self.metrics_port}")

    async def restart(self, timeout: float = 60) -> Role:
        """kill -9, then the same command on the same ports."""
        assert self.log_path is not None
        await self.kill()
        return await self.start(self.log_path.parent, timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace") if self.log_path else "(not started)"
        except OSError:
            return "(no log)"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def lost_a_port(self) -> bool:
        """Whether this start failed to bind a port (another process took it after free_port() chose it)."""
        if self.running or self.log_path is None:
            return False
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
        return "cannot listen on" in text or "Address already in use" in text

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:
        """The exit code, once the process has exited (fails after timeout)."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        self.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self, timeout: float = 10) -> None:
        """kill -9 (no chance to clean up) and reap it."""
        if self.running:
            self.send_signal(signal.SIGKILL)
            await self.wait(timeout)


@dataclass
class DevServer(Role):
    """`pushplat dev`: every role in one process; up when both the edge and the api serve."""

    edge_port: int = 0
    api_port: int = 0

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.edge_port}"

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def health_ports(self) -> list[int]:
        return [p for p in (self.edge_port, self.api_port) if p]


class ProcessGroup:
    """Every process one test starts; stop() kills those still running (call it in a finally)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.roles: list[Role] = []
        self.clients: list[asyncio.subprocess.Process] = []

    def _count(self, prefix: str) -> int:
        return sum(r.name.startswith(prefix) for r in self.roles)

    async def start(self, role: Role, timeout: float = 60) -> Role:
        self.roles.append(role)  # before starting: stop() must find it even if start-up fails
        return await role.start(self.log_dir, timeout)

    async def start_on_free_ports(self, make: Callable[[], Role], timeout: float = 60, attempts: int = 3) -> Role:
        """Start make()'s role, whose ports free_port() chose. Any process may take such a port before
        the role binds it (e.g. as the local port of an outgoing connection): then make() again."""
        for attempt in range(1, attempts + 1):
            role = make()
            try:
                return await self.start(role, timeout)
            except ExitedDuringStartup:
                if attempt == attempts or not role.lost_a_port():
                    raise
                self.roles.remove(role)  # it has exited; its name is free for the next try
        raise AssertionError("unreachable")

    async def dev(
        self,
        *extra: str,
        env: dict[str, str] | None = None,
        ports: tuple[int, int, int] | None = None,
        ws: bool = False,
    ) -> DevServer:
        """`pushplat dev` on the given (edge, api, delivery) ports, or free ones; restart() keeps them.
        With ws, also on a free --ws-port (tests turn the WebSocket port off otherwise)."""

        def make() -> DevServer:
            edge, api, delivery = ports or (free_port(), free_port(), free_port())
            args = ["dev", "--edge-port", str(edge), "--api-port", str(api), "--delivery-port", str(delivery), *extra]
            ws_port = free_port() if ws else 0
            if ws:
                args += ["--ws-port", str(ws_port)]
            return DevServer(
                f"dev{self._count('dev')}",
                args,
                port=edge,
                env=env or {},
                edge_port=edge,
                api_port=api,
                ws_port=ws_port,
            )

        role = await (self.start(make()) if ports else self.start_on_free_ports(make))
        assert isinstance(role, DevServer)
        return role

    async def client(self, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        """A long-running `pushplat` client command (e.g. listen), its stdout and stderr piped."""
        proc = await asyncio.create_subprocess_exec(
            *PUSHPLAT,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.clients.append(proc)
        return proc

    async def stop(self) -> None:
        for proc in self.clients:
            if proc.returncode is None:
                proc.kill()
        await asyncio.gather(
            *(role.kill() for role in self.roles),
            *(asyncio.wait_for(proc.wait(), 10) for proc in self.clients),
            return_exceptions=True,
        )


class Deployment(ProcessGroup):
    """api, routers and edges as separate processes on shared Redis and Kafka, isolated by a unique prefix.

    Routers and edges share a fresh internal secret (PUSHPLAT_INTERNAL_SECRET) unless
    internal_env says otherwise (e.g. {} for none, or mutual-TLS files)."""

    def __init__(
        self, redis_url: str, kafka_url: str, log_dir: str | Path, internal_env: dict[str, str] | None = None
    ) -> None:
        super().__init__(log_dir)
        self.kafka_url = kafka_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.registry = with_prefix(redis_url, self.prefix)
        self.internal_env = (
            internal_env if internal_env is not None else {"PUSHPLAT_INTERNAL_SECRET": secrets.token_hex(32)}
        )

    def _role(
        self,
        name: str,
        args: list[str],
        extra: tuple[str, ...],
        port: int = 0,
        metrics: bool = False,
        env: dict[str, str] | None = None,
    ) -> Role:
        metrics_port = free_port() if metrics else 0
        common = ["--registry", self.registry, "--queue", self.kafka_url, "--topic-prefix", self.prefix]
        common += ["--log-level", "info", *(["--metrics-port", str(metrics_port)] if metrics else [])]
        return Role(name, [*args, *common, *extra], port, metrics_port, env=dict(env or {}))

    def edge_id(self, name: str) -> str:
        """The --edge-id of the edge role called name."""
        return f"{self.prefix}-{name}"

    async def api(self, *extra: str, metrics: bool = False) -> Role:
        def make() -> Role:
            port = free_port()
            return self._role("api", ["api", "--api-port", str(port)], extra, port, metrics)

        return await self.start_on_free_ports(make)

    async def router(self, *extra: str, metrics: bool = False) -> Role:
        name = f"router{self._count('router')}"
        env = self.internal_env
        return await self.start_on_free_ports(lambda: self._role(name, ["router"], extra, metrics=metrics, env=env))

    async def edge(self, *extra: str, name: str = "", metrics: bool = False, ws: bool = False) -> Role:
        name = name or f"edge{self._count('edge')}"

        def make() -> Role:
            port, delivery = free_port(), free_port()
            args = ["edge", "--edge-port", str(port), "--delivery-port", str(delivery), "--edge-id", self.edge_id(name)]
            ws_port = free_port() if ws else 0
            if ws:
                args += ["--ws-port", str(ws_port)]
            role = self._role(name, args, extra, port, metrics, env=self.internal_env)
            role.delivery_port = delivery
            role.ws_port = ws_port
            return role

        return await self.start_on_free_ports(make)

    async def platform(self, routers: int = 2, edges: int = 2) -> tuple[Role, list[Role], list[Role]]:
        """An api, then the routers, then the edges, one after another: (api, routers, edges)."""
        api = await self.api()
        return api, [await self.router() for _ in range(routers)], [await self.edge() for _ in range(edges)]


@dataclass
class Service:
    """A backend run by scripts/services/NAME.sh in a private state dir."""

    script: Path
    state: Path
    env: dict[str, str] = field(default_factory=dict)

    async def _script(self, command: str, *args: str, env: dict[str, str] | None, timeout: float) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(self.script),
            command,
            str(self.state),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"{self.script.name} {command} did not finish within {timeout}s")
        return proc.returncode, out.decode(errors="replace")

    async def start(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> None:
        code, out = await self._script("start", *args, env=env, timeout=timeout)
        assert code == 0, f"{self.script.name} start failed ({code}):\n{out[-3000:]}"
        text = (self.state / "env").read_text()
        self.env = dict(re.findall(r"^export (\w+)=(\S*)$", text, re.MULTILINE))

    async def stop(self, timeout: float = 60) -> int:
        code, _ = await self._script("stop", env=None, timeout=timeout)
        return code

    async def restart(self, timeout: float = 120) -> None:
        """The script's restart: the same port again (Redis empty, Kafka with its data)."""
        code, out = await self._script("restart", env=None, timeout=timeout)
        assert code == 0, f"{self.script.name} restart failed ({code}):\n{out[-3000:]}"


@asynccontextmanager
async def service(
    name: str, state: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> AsyncIterator[Service]:
    """scripts/services/NAME.sh started into state (its env file read into .env); stopped at the end,
    even after a failed start."""
    svc = Service(SERVICES / f"{name}.sh", state)
    try:
        await svc.start(*args, env=env, timeout=timeout)
        yield svc
    finally:
        await svc.stop()
