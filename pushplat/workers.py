"""`--workers N`: one role as N processes under a supervisor, so a role uses every core.

Each worker is the same `pushplat ROLE` command with `--workers 1` and a few overrides:

- the shared public ports (device port, api port, health port) are bound by every worker with
  SO_REUSEPORT (`--reuse-port`), so the kernel spreads new connections over them;
- per-worker ports (an edge's delivery port, every worker's metrics port) are the base port
  plus the worker's index (0 stays 0: each picks a free port, and an edge advertises its own);
- an edge worker gets its own edge id, `<edge id>-w<index>`, so routers address each one.

The supervisor forwards SIGTERM/SIGINT to every worker (each drains as a single process would)
and exits once all have: 0 if every worker exited cleanly, 1 otherwise. A worker that dies
while the supervisor is not stopping is restarted with exponential backoff (1 s doubling to
30 s, reset after a minute of uptime), logged as `workers.restart`. A worker that exits with 2,
a start-up error such as a taken port, stops the whole group with exit code 2: restarting it
would fail the same way.

Workers die with their supervisor, however it dies: each asks the kernel for SIGTERM when its
parent goes (Linux PR_SET_PDEATHSIG; elsewhere a thread watches the parent pid), so a
supervisor killed with -9 leaves no orphans serving on its ports. Each then stops (an edge
drains) as it would on the supervisor's own SIGTERM.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pushplat.config import Config
from pushplat.logs import kv
from pushplat.waits import wait_event

log = logging.getLogger("pushplat.workers")

STARTUP_ERROR = 2
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# A worker up this long counts as healthy: its next crash starts the backoff again.
HEALTHY_AFTER_S = 60.0
# Set by the supervisor in each worker's environment: the pid the worker must not outlive.
# Internal (not an option): leading underscore, outside the PUSHPLAT_<OPTION> names.
SUPERVISOR_PID_ENV = "_PUSHPLAT_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How often a worker without PR_SET_PDEATHSIG checks that its supervisor is still its parent.
PARENT_CHECK_S = 1.0


def die_with_supervisor(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """In a worker: get SIGTERM when the supervisor that started it dies (kill -9 included)."""
    raw = environ.get(SUPERVISOR_PID_ENV)
    if not raw or not raw.isdigit():
        return  # not started by a supervisor
    supervisor = int(raw)
    if not _ask_for_parent_death_signal(signal.SIGTERM):
        threading.Thread(target=_watch_parent, args=(supervisor,), name="parent-watch", daemon=True).start()
    # The supervisor may have died before the request took effect: then we are someone else's.
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def _ask_for_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(PARENT_CHECK_S)
    log.warning(kv("workers.supervisor_gone", supervisor_pid=supervisor, detail="stopping this worker"))
    os.kill(os.getpid(), signal.SIGTERM)


def pick_free_port(host: str) -> int:
    """A port every worker can share: port 0 would give each worker a different one."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host or "0.0.0.0", 0))
        return int(probe.getsockname()[1])


def worker_args(config: Config, index: int, shared: dict[str, int]) -> list[str]:
    """The overrides for worker `index`, appended to the supervisor's own arguments (argparse
    keeps the last value of an option)."""
    args = ["--workers", "1", "--reuse-port"]
    for flag, port in shared.items():
        args += [flag, str(port)]
    role = config.roles[0]
    if role == "edge":
        args += ["--edge-id", f"{config.edge_id}-w{index}"]
        args += ["--delivery-port", str(config.delivery_port + index if config.delivery_port else 0)]
    if config.metrics_port:
        args += ["--metrics-port", str(config.metrics_port + index)]
    return args


def shared_ports(config: Config) -> dict[str, int]:
    """The public ports all workers bind together, with 0 resolved to one free port."""
    role = config.roles[0]
    ports: dict[str, int] = {}
    if role == "edge":
        ports["--edge-port"] = config.edge_port or pick_free_port(config.host)
        if config.ws_port:
            ports["--ws-port"] = config.ws_port
    if role == "api":
        ports["--api-port"] = config.api_port or pick_free_port(config.host)
    if role in ("edge", "api") and config.health_port:
        ports["--health-port"] = config.health_port
    return ports


@dataclass
class Worker:
    index: int
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0


class Supervisor:
    def __init__(self, config: Config, argv: Sequence[str]) -> None:
        self.config = config
        shared = shared_ports(config)
        base = [sys.executable, "-m", "pushplat", *argv]
        self.env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid())}
        self.workers = [Worker(i, [*base, *worker_args(config, i, shared)]) for i in range(config.workers)]
        self.shared = shared
        self.stopping = False
        self._stop = asyncio.Event()
        self.exit_code = 0
        self._signals = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            kv(
                "workers.started",
                role=self.config.roles[0],
                workers=len(self.workers),
                shared_ports=",".join(f"{flag.lstrip('-')}={port}" for flag, port in self.shared.items()) or None,
                pid=os.getpid(),
            )
        )
        await asyncio.gather(*(self._keep(worker) for worker in self.workers))
        log.info(kv("workers.stopped", role=self.config.roles[0], exit_code=self.exit_code))
        return self.exit_code

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        self.stopping = True
        self._stop.set()
        log.info(kv("workers.signal", signal=signal.Signals(sig).name, forwarded_to=len(self.workers)))
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.proc.send_signal(sig)  # a second signal stops the workers at once, as it does one process

    def _stop_all(self, code: int) -> None:
        """A worker cannot start: stop the others (gracefully) and exit with its code."""
        if not self.stopping:
            self.stopping = True
            self._stop.set()
            self.exit_code = code
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is None:
                    worker.proc.send_signal(signal.SIGTERM)

    async def _keep(self, worker: Worker) -> None:
        backoff = BACKOFF_FIRST_S
        while not self.stopping:
            worker.proc = await asyncio.create_subprocess_exec(
                *worker.argv, stdin=asyncio.subprocess.DEVNULL, env=self.env
            )
            worker.started = time.monotonic()
            if self.stopping:  # the signal came while this worker was starting
                worker.proc.send_signal(signal.SIGTERM)
            log.info(kv("workers.worker_started", worker=worker.index, pid=worker.proc.pid, restarts=worker.restarts))
            code = await worker.proc.wait()
            uptime = time.monotonic() - worker.started
            if self.stopping:
                # Killed by the very signal we forwarded (a worker still importing has no handler
                # yet, and nothing to drain): that is a clean stop too.
                if code not in (0, -signal.SIGTERM, -signal.SIGINT) and self.exit_code == 0:
                    self.exit_code = 1
                log.info(kv("workers.worker_exited", worker=worker.index, exit_code=code))
                return
            if code == STARTUP_ERROR:
                log.error(
                    kv(
                        "workers.worker_failed_to_start",
                        worker=worker.index,
                        exit_code=code,
                        detail="stopping every worker (see the worker's own error above)",
                    )
                )
                self._stop_all(STARTUP_ERROR)
                return
            if uptime >= HEALTHY_AFTER_S:
                backoff = BACKOFF_FIRST_S
            worker.restarts += 1
            log.warning(
                kv(
                    "workers.restart",
                    worker=worker.index,
                    exit_code=code,
                    signal=signal.Signals(-code).name if code < 0 else None,
                    uptime_s=round(uptime, 1),
                    restart_in_s=backoff,
                    restarts=worker.restarts,
                )
            )
            await wait_event(self._stop, backoff)  # a signal ends the wait early
            backoff = min(backoff * 2, BACKOFF_MAX_S)


async def supervise(config: Config, argv: Sequence[str]) -> int:
    return await Supervisor(config, argv).run()
