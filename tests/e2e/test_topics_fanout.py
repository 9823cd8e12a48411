"""2,000 devices subscribed to one topic across 2 edges, clients in their own processes (the Go
load generator), on real Redis + Kafka: one Send reaches every one of them, in time.

The bound is the issue's target, 99 % within 2 s, which it sets for 10,000 devices on this
2-core machine; 2,000 devices are a fifth of that fan-out, so the same bound leaves room for a
CI machine busy with other work (measured: p99 0.2-0.45 s here). The 10,000-device figures are
in the README (benchmarks/topic_fanout.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_bench import require_go
from tests.helpers import require_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.timeout(600)]


def test_one_topic_send_reaches_2000_devices_on_two_edges(tmp_path):
    require_go()
    redis, kafka = require_env("PUSHPLAT_TEST_REDIS_URL"), require_env("PUSHPLAT_TEST_KAFKA_URL")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "topic_fanout.py"),
            "--devices",
            "2000",
            "--edges",
            "2",
            "--sends",
            "2",
            "--redis-url",
            redis,
            "--kafka-url",
            kafka,
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2000 and len(report["sends"]) == 2
    for row in report["sends"]:
        assert row["received"] == 2000, row  # every subscriber, once (the harness counts each copy)
        assert row["p99_ms"] <= 2000, row
        assert row["server_cpu_us_per_frame"] > 0, row
