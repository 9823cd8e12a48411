"""scripts/bench at tiny sizes: it runs end to end and prints its table and JSON figures.

Not a timing test: it checks that every figure is there and that every message arrived,
never how fast. The bench builds its Go load generator, so it needs Go (a failure in CI).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_env

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
# Tiny, but through every stage: connect, probe, warm-up, the measured window, the report.
TINY = ["--devices", "20", "--messages", "200", "--warmup", "20", "--fanout-sends", "5"]


def require_go() -> None:
    if shutil.which("go"):
        return
    if os.environ.get("CI"):
        pytest.fail("go is not on PATH: the bench's load generator needs it (CI is set, so this fails)")
    pytest.skip("go is not on PATH: the bench's load generator needs it")


# The first run on a machine also builds the load generator (Go modules may need fetching).
pytestmark = pytest.mark.timeout(600)


def run_bench(*args: str, timeout: float = 540) -> tuple[str, dict[str, Any]]:
    require_go()
    result = subprocess.run(
        [str(BENCH), *TINY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"bench failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    lines = result.stdout.strip().splitlines()
    return result.stdout, json.loads(lines[-1])


def check_row(row: dict[str, Any], *, processes: set[str]) -> None:
    assert row["lost"] == 0 and row["duplicates"] == 0 and row["send_errors"] == 0, row
    assert row["delivered_per_s"] > 0, row
    assert row["p50_ms"] is not None and row["p99_ms"] >= row["p50_ms"], row
    # /proc counts CPU in 10 ms ticks, so one tiny row (200 batched messages, ~40 ms) can read 0
    # under load: callers check that their rows together measured some CPU, not each row.
    assert set(row["server_cpu_us_per_msg_by_process"]) == processes, row
    assert row["rss_per_conn_kib"] is not None, row


def test_embedded_modes_print_one_table_and_json() -> None:
    out, report = run_bench("--mode", "single,batch,stream,fanout,single@400")
    header = out.splitlines()[4]
    for column in ("mode", "delivered/s", "p50 ms", "p99 ms", "CPU µs/msg", "per process", "RSS/conn KiB"):
        assert column in header, header
    assert "cores" in out and "grpcio" in out and "uvloop" in out  # the machine
    rows = {row["mode"]: row for row in report["rows"]}
    assert set(rows) == {"single", "batch", "stream", "fanout", "single@400/s"}
    for mode in ("single", "batch", "fanout", "single@400/s"):
        check_row(rows[mode], processes={"dev"})
    assert sum(rows[mode]["server_cpu_us_per_msg"] for mode in rows) > 0, "no server CPU measured at all"
    assert rows["single"]["messages"] == 200 and rows["fanout"]["messages"] == 5
    # Fan-out: each of the 5 sends reached all 20 devices.
    fanout_run = report["runs"][[r["mode"] for r in report["rows"]].index("fanout")][0]
    assert fanout_run["delivered"] == 5 * 20
    # Push.SendStream is planned (issue 11); until the server has it the row says so.
    stream = rows["stream"]
    if "unsupported" in stream:
        assert stream["unsupported"].startswith("not supported by this server"), stream
        assert "not supported by this server" in out
    else:
        check_row(stream, processes={"dev"})


@pytest.mark.parametrize("internal_auth", ["secret", "mtls"])
def test_distributed_reports_every_server_process(internal_auth: str) -> None:
    redis = require_env("PUSHPLAT_TEST_REDIS_URL")
    kafka = require_env("PUSHPLAT_TEST_KAFKA_URL")
    args = ["--distributed", "--redis-url", redis, "--kafka-url", kafka, "--internal-auth", internal_auth]
    _, report = run_bench(*args, "--mode", "single")
    (row,) = report["rows"]
    assert row["setup"] == "distributed"
    assert report["runs"][0][0]["internal_auth"] == internal_auth
    check_row(row, processes={"api", "router", "edge"})
    assert row["server_cpu_us_per_msg"] > 0, row
    assert set(row["services_cpu_us_per_msg"]) == {"redis", "kafka"}


def test_ws_transport_measures_websocket_devices_beside_grpc() -> None:
    """Issue 13: the devices connect to --ws-port (Go load generator, benchmarks/loadgen/ws.go)."""
    _, report = run_bench("--transport", "ws", "--mode", "single")
    (row,) = report["rows"]
    assert "unsupported" not in row, row
    assert row["transport"] == "ws"
    check_row(row, processes={"dev"})
    assert row["server_cpu_us_per_msg"] > 0, row


def test_floor_measures_the_stand_in_not_pushplat() -> None:
    """--floor runs benchmarks/floor (the least a grpc.aio push server does) through the same
    harness; every message still has to arrive and be counted."""
    # What the bench starts (`python -m floor dev` in benchmarks/) is the stand-in.
    python = ROOT / ".venv" / "bin" / "python"
    started = subprocess.run(
        [str(python), "-m", "floor", "dev", "--help"],
        cwd=ROOT / "benchmarks",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert started.stdout.startswith("usage: floor dev"), started.stdout
    out, report = run_bench("--floor", "--mode", "single,batch,stream")
    rows = {row["mode"]: row for row in report["rows"]}
    assert set(rows) == {"single", "batch", "stream"}
    for row in rows.values():
        assert row["setup"] == "floor", row
        check_row(row, processes={"dev"})
        assert row["server_log_lines"] == 0, row  # the stand-in writes nothing: an error would show
    assert sum(row["server_cpu_us_per_msg"] for row in rows.values()) > 0, "no server CPU measured at all"
    assert report["machine"]["pushplat_root"].endswith("benchmarks/floor")
    assert " floor " in out


@pytest.mark.parametrize(
    "wrong", [["--distributed"], ["--transport", "ws"], ["--pushplat-root", "/tmp"], ["--server-arg", "dev:--x"]]
)
def test_floor_refuses_what_it_cannot_measure(wrong: list[str]) -> None:
    result = subprocess.run(
        [str(BENCH), "--floor", *wrong], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result
    assert "--floor measures the embedded gRPC stand-in" in result.stderr


def test_load_generator_unit_tests() -> None:
    """The Go side's own tests, e.g. SendStream against a fake server with the assumed proto."""
    require_go()
    result = subprocess.run(
        ["go", "test", "-count=1", "./..."],
        cwd=ROOT / "benchmarks" / "loadgen",
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, f"go test failed:\n{result.stdout[-4000:]}\n{result.stderr[-3000:]}"


def load_bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("pushplat_bench", ROOT / "benchmarks" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_help_documents_every_option() -> None:
    bench = load_bench_module()
    result = subprocess.run([str(BENCH), "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for action in bench.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        for flag in action.option_strings:
            assert flag in result.stdout, flag


def test_mode_list_and_rates_parse() -> None:
    bench = load_bench_module()
    specs = bench.parse_modes(["single,batch@500", "fanout"], 0.0)
    assert [(s.mode, s.rate) for s in specs] == [("single", 0.0), ("batch", 500.0), ("fanout", 0.0)]
    paced = bench.parse_modes(["all"], 1000.0)
    assert [(s.mode, s.rate) for s in paced] == [("single", 1000), ("batch", 1000), ("stream", 1000), ("fanout", 0)]
    for bad in (["nope"], ["single@fast"], ["fanout@100"], ["single@0"]):
        with pytest.raises(argparse.ArgumentTypeError, match=r"unknown mode|bad rate|closed loop only"):
            bench.parse_modes(bad, 0.0)
