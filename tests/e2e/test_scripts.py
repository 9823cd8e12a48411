"""The README's set-up command scripts/run, run the way a user runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from tests.helpers import free_port
from tests.processes import DevServer, metrics_up, run, scrape

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_RUN = str(ROOT / "scripts" / "run")


async def run_script(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        SCRIPTS_RUN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def test_scripts_run_help_is_pushplat_dev_help():
    code, out, err = await run_script("--help")
    assert code == 0, err
    assert out.startswith("usage: pushplat dev"), out[:500]
    assert "--edge-port" in out and "PUSHPLAT_EDGE_PORT" in out
    assert "Traceback" not in err and "pip" not in err.lower()


async def test_scripts_run_passes_every_argument_to_pushplat_dev(processes):
    def make() -> DevServer:
        edge, api, delivery, metrics = free_port(), free_port(), free_port(), free_port()
        args = ["--edge-port", str(edge), "--api-port", str(api), "--delivery-port", str(delivery)]
        args += ["--metrics-port", str(metrics), "--edge-id", "run-edge-1", "--max-payload-bytes", "10"]
        return DevServer(
            "scripts-run", args, command=(SCRIPTS_RUN,), port=edge, edge_port=edge, api_port=api, metrics_port=metrics
        )

    server = await processes.start_on_free_ports(make, timeout=300)
    assert isinstance(server, DevServer)
    assert await metrics_up(server.metrics_port)
    assert "pushplat_open_connections" in await asyncio.to_thread(scrape, server.metrics_port)
    code, out, err = await run("send", "--api", server.api, "--device", "nobody", "0123456789")
    assert code == 0 and json.loads(out)["message_id"], err
    code, out, err = await run("send", "--api", server.api, "--device", "nobody", "0123456789+")
    assert code == 1 and "INVALID_ARGUMENT" in err and "limit is 10 bytes" in err
    assert "edge_id=run-edge-1" in server.log()
    assert await server.terminate(timeout=60) == 0


def test_a_first_install_on_a_fresh_clone_prints_nothing_on_stderr(tmp_path):
    """What scripts/run and scripts/test do first: their first lines were setuptools' 10-line
    warning about editable installs, once per package."""
    clone = tmp_path / "pushplat"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    result = subprocess.run(
        ["bash", "-c", "source scripts/lib/bootstrap.sh"], cwd=clone, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert f"installing pushplat into {clone}/.venv" in result.stdout
    assert result.stderr == ""
