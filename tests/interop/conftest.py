"""Fixtures for the cross-language interop suite.

The Go, Node and Java programs under clients/go/cmd/interop, clients/typescript/interop and
clients/java/src/test/java/io/pushplat/client/interop are built once per session (Go and Node
into a temp dir, Java into clients/java/target); `pushplat dev` runs as a subprocess on free
ports. Without go, node/npm or java/mvn the suite is skipped, except in CI (CI set), where it
fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.certs import CA
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
GO_DIR = ROOT / "clients" / "go"
TS_DIR = ROOT / "clients" / "typescript"
JAVA_DIR = ROOT / "clients" / "java"
# Maven quiet and non-interactive; the JVM flags trade peak speed for start-up and CPU, which is
# what short-lived test processes on two shared cores need.
MVN = ["mvn", "-q", "-B"]
JAVA = ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
PUSHPLAT = [sys.executable, "-m", "pushplat"]

SECRET = "interop-secret-0123456789abcdef0123456789"
API_KEY = "interop-api-key"
# Bounds for single expected events. Sends normally arrive within milliseconds; the first
# start of a program (Node loading its modules, Go's first dial) takes longer.
EVENT_TIMEOUT = 15.0
BUILD_TIMEOUT = 600.0


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if not missing:
        return
    message = f"{' and '.join(missing)} not on PATH: the interop suite needs it"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


def run_step(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600, what: str = "build step"
) -> str:
    """Run a toolchain command; fail the test with its output if it fails or overruns.
    Returns its stdout."""
    try:
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} timed out after {timeout:g}s: {' '.join(cmd)} (in {cwd})")
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed ({result.returncode}): {' '.join(cmd)} (in {cwd})\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result.stdout


def readme_block(readme: Path, name: str) -> str:
    """The fenced code block after `<!-- tested: name -->` in a README: the tests that follow a
    README to the letter read its commands and files from there."""
    text = readme.read_text()
    marker = f"<!-- tested: {name} -->"
    at = text.find(marker)
    if at < 0:
        pytest.fail(f"{readme} has no {marker!r}: a test follows the README's block")
    block = re.compile(r"```[A-Za-z]*\n(.*?)```", re.S).search(text, at + len(marker))
    assert block is not None, f"no code block after {marker!r} in {readme}"
    return block.group(1)


def run_build(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    started = time.monotonic()
    out = run_step(cmd, cwd, env, timeout=BUILD_TIMEOUT)
    print(f"interop build: {' '.join(cmd)} took {time.monotonic() - started:.1f}s", file=sys.stderr)
    return out


@dataclass(frozen=True)
class Program:
    """A built interop program: the argv prefix and extra environment to run it with."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)

    def listen_args(self, edge: str, *, token: str = "", user: str = "", device: str = "", count: int = 1) -> list[str]:
        args = ["listen", "--edge", edge, "--count", str(count), "--timeout-ms", "60000"]
        if token:
            args += ["--token", token]
        if user:
            args += ["--user", user]
        if device:
            args += ["--device", device]
        return args


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("interop-build")


@pytest.fixture(scope="session")
def go_program(build_dir: Path) -> Program:
    require_tools("go")
    out = build_dir / "go-interop"
    run_build(["go", "build", "-buildvcs=false", "-o", str(out), "./cmd/interop"], cwd=GO_DIR)
    return Program("go", (str(out),))


@pytest.fixture(scope="session")
def node_program(build_dir: Path) -> Program:
    require_tools("node", "npm")
    # npm ci (skipped when node_modules already matches package-lock.json).
    run_build(["bash", str(TS_DIR / "scripts" / "setup.sh")], cwd=TS_DIR)
    out = build_dir / "ts"
    run_build([str(TS_DIR / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json", "--outDir", str(out)], cwd=TS_DIR)
    # The compiled files live outside the package, so point Node at its node_modules.
    return Program("node", ("node", str(out / "interop" / "main.js")), {"NODE_PATH": str(TS_DIR / "node_modules")})


@pytest.fixture(scope="session")
def java_build() -> Path:
    """Compiles the Java SDK and its tests once; returns the file holding the test classpath."""
    require_tools("java", "mvn")
    classpath = JAVA_DIR / "target" / "test-classpath.txt"
    run_build(
        [
            *MVN,
            "test-compile",
            "dependency:build-classpath",
            "-Dmdep.includeScope=test",
            f"-Dmdep.outputFile={classpath}",
        ],
        cwd=JAVA_DIR,
    )
    return classpath


@pytest.fixture(scope="session")
def java_program(java_build: Path) -> Program:
    target = JAVA_DIR / "target"
    classpath = os.pathsep.join([str(target / "test-classes"), str(target / "classes"), java_build.read_text().strip()])
    return Program("java", (*JAVA, "-cp", classpath, "io.pushplat.client.interop.InteropMain"))


@dataclass
class Platform:
    edge: str
    api: str
    auth: bool
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def wait_serving(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pushplat dev exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"pushplat dev not serving on port {port} after {timeout}s")
            time.sleep(0.05)


def start_platform(tmp: Path, *extra: str, health: int = 0) -> Iterator[Platform]:
    """`pushplat dev` with extra flags; with health (a --health-port among them), wait on that
    plaintext port instead of the edge and api (which may serve TLS only)."""
    edge, api, delivery, metrics = free_port(), free_port(), free_port(), 0
    log = tmp / "pushplat-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *PUSHPLAT,
                "dev",
                "--edge-port",
                str(edge),
                "--api-port",
                str(api),
                "--delivery-port",
                str(delivery),
                "--metrics-port",
                str(metrics),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for port in [health] if health else [edge, api]:
            wait_serving(port, proc, log)
        yield Platform(f"127.0.0.1:{edge}", f"127.0.0.1:{api}", "--auth-secret" in extra, proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dev_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`pushplat dev` with auth off."""
    yield from start_platform(tmp_path_factory.mktemp("dev-open"))


@pytest.fixture(scope="module")
def auth_dev_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """`pushplat dev` with device tokens and an API key required."""
    yield from start_platform(tmp_path_factory.mktemp("dev-auth"), "--auth-secret", SECRET, "--api-key", API_KEY)


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    cert: str  # a client certificate the api accepts
    key: str


@pytest.fixture(scope="module")
def tls_dev_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, TlsFiles]]:
    """`pushplat dev` with TLS on both public ports and mutual TLS on the api (test-time certs)."""
    tmp = tmp_path_factory.mktemp("dev-tls")
    ca = CA(tmp / "pki")
    server, backend = ca.issue("server"), ca.issue("backend")
    health = free_port()
    tls = ["--tls-cert", str(server.cert), "--tls-key", str(server.key), "--api-tls-client-ca", str(ca.cert)]
    for platform in start_platform(tmp, *tls, "--health-port", str(health), health=health):
        yield platform, TlsFiles(str(ca.cert), str(backend.cert), str(backend.key))


def mint_token(user: str, device: str, secret: str = SECRET) -> str:
    result = subprocess.run(
        [*PUSHPLAT, "token", "--secret", secret, "--user", user, "--device", device],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


class Running:
    """A Go, Node or Java interop program running as a subprocess; it prints JSON lines."""

    def __init__(self, program: Program, proc: asyncio.subprocess.Process, args: list[str]) -> None:
        self.program = program
        self.proc = proc
        self.args = args
        self.events: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return f"{self.program.name} {self.args[0]}"

    async def _stderr(self) -> str:
        if self.proc.stderr is None:
            return ""
        try:
            data = await asyncio.wait_for(self.proc.stderr.read(), 2)
        except TimeoutError:
            return "(stderr still open)"
        return data.decode(errors="replace")[-3000:]

    async def next_event(self, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.name}: no output within {timeout}s (so far: {self.events})")
        if not line:
            code = await asyncio.wait_for(self.proc.wait(), 10)
            pytest.fail(f"{self.name}: exited ({code}) early; events {self.events}; stderr:\n{await self._stderr()}")
        event = json.loads(line)
        self.events.append(event)
        return event

    async def expect(self, kind: str, timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        event = await self.next_event(timeout)
        assert event.get("event") == kind, f"{self.name}: expected a {kind!r} event, got {event}"
        return event

    async def finish(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Wait for the program to exit; returns its exit code."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"{self.name}: still running after {timeout}s")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def run_program() -> Any:
    """Start interop programs; each is killed after the test if it is still running."""
    started: list[Running] = []

    async def start(program: Program, args: list[str]) -> Running:
        proc = await asyncio.create_subprocess_exec(
            *program.argv,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **program.env},
        )
        running = Running(program, proc, args)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()
        await running.proc.wait()
