"""The Go and TypeScript SDKs' own test suites (unit tests and fake-edge behaviour tests),
run from pytest so that scripts/test covers them without a change of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.interop.conftest import GO_DIR, Program, require_tools

SUITE_TIMEOUT = 600


def run_suite(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    try:
        result = subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=SUITE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(cmd)} timed out after {SUITE_TIMEOUT}s")
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({result.returncode}) in {cwd}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-3000:]}"
        )


def test_go_sdk_vet_and_tests() -> None:
    require_tools("go")
    run_suite(["go", "vet", "./..."], cwd=GO_DIR)
    run_suite(["go", "test", "-count=1", "./..."], cwd=GO_DIR)


def test_typescript_sdk_tests(node_program: Program, build_dir: Path) -> None:
    # node_program compiled the package (tests included) into build_dir/ts.
    run_suite(
        ["node", "--test", "--test-concurrency=1", str(build_dir / "ts" / "test")],
        cwd=build_dir,
        env=node_program.env,
    )
