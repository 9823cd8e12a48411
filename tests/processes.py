"""Run pushplat roles as separate OS processes for multi-process tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import eventually, free_port


async def serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Role:
    name: str
    args: list[str]
    port: int = 0  # the port whose health says the role is up (0: none, e.g. a router)
    proc: asyncio.subprocess.Process | None = None
    log_path: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, log_dir: str, timeout: float = 60) -> Role:
        self.log_path = os.path.join(log_dir, f"{self.name}.log")
        log = open(self.log_path, "ab")  # noqa: ASYNC230 - a local file, opened once per process start
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pushplat", *self.args, stdout=log, stderr=log, env=dict(os.environ))
        log.close()
        if self.port:
            async def up() -> bool:
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
                return await serving(self.port)

            await eventually(up, timeout, what=f"{self.name} to serve on {self.port}")
        return self

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    async def kill(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@dataclass
class Deployment:
    """api, routers and edges on shared Redis and Kafka, isolated by a unique prefix."""

    redis_url: str
    kafka_url: str
    log_dir: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    roles: list[Role] = field(default_factory=list)

    @property
    def registry(self) -> str:
        sep = "&" if "?" in self.redis_url else "?"
        return f"{self.redis_url}{sep}prefix={self.prefix}"

    def _common(self) -> list[str]:
        return ["--registry", self.registry, "--queue", self.kafka_url, "--topic-prefix", self.prefix,
                "--log-level", "info"]

    async def api(self, *extra: str) -> Role:
        port = free_port()
        role = Role("api", ["api", "--api-port", str(port), *self._common(), *extra], port)
        self.roles.append(role)
        return await role.start(self.log_dir)

    async def router(self, *extra: str) -> Role:
        role = Role(f"router{sum(r.name.startswith('router') for r in self.roles)}",
                    ["router", *self._common(), *extra])
        self.roles.append(role)
        return await role.start(self.log_dir)

    async def edge(self, *extra: str, name: str = "") -> Role:
        port = free_port()
        name = name or f"edge{sum(r.name.startswith('edge') for r in self.roles)}"
        role = Role(name, ["edge", "--edge-port", str(port), "--delivery-port", str(free_port()),
                           "--edge-id", f"{self.prefix}-{name}", *self._common(), *extra], port)
        self.roles.append(role)
        return await role.start(self.log_dir)

    async def stop(self) -> None:
        await asyncio.gather(*(role.kill() for role in self.roles))
