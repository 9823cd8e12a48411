"""The Go, TypeScript and Java SDKs' own test suites (unit tests and fake-edge behaviour tests),
run from pytest so that scripts/test covers them without a change of its own."""

from __future__ import annotations

import re
from pathlib import Path

from tests.interop.conftest import GO_DIR, JAVA_DIR, MVN, TS_DIR, Program, require_tools, run_step

SUITE_TIMEOUT = 600


def run_suite(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    run_step(cmd, cwd, env, timeout=SUITE_TIMEOUT, what="SDK suite")


def test_go_sdk_vet_and_tests() -> None:
    require_tools("go")
    run_suite(["go", "vet", "./..."], cwd=GO_DIR)
    run_suite(["go", "test", "-count=1", "./..."], cwd=GO_DIR)


def test_typescript_sdk_tests(node_program: Program, build_dir: Path) -> None:
    # node_program compiled the package (tests included) into build_dir/ts; the browser bundle
    # (esbuild, into the package's dist/browser) is built here for test/browser.test.ts to check.
    run_suite(["npm", "run", "--silent", "build:browser"], cwd=TS_DIR)
    run_suite(
        ["node", "--test", "--test-concurrency=1", str(build_dir / "ts" / "test")],
        cwd=build_dir,
        env={**node_program.env, "PUSHPLAT_BROWSER_BUNDLE_DIR": str(TS_DIR / "dist" / "browser")},
    )


def test_the_readme_gives_the_browser_bundle_size(node_program: Program) -> None:
    """The README said about 41 KB while the bundle had grown to 50: a newcomer's check failed."""
    run_suite(["npm", "run", "--silent", "build:browser"], cwd=TS_DIR)
    size = (TS_DIR / "dist" / "browser" / "pushplat.js").stat().st_size
    readme = (TS_DIR.parents[1] / "README.md").read_text()
    stated = int(re.search(r"one ES module of about (\d+) KB", readme).group(1)) * 1000
    assert abs(size - stated) <= stated / 10, f"the bundle is {size} bytes; the README says about {stated}"


def test_java_sdk_tests(java_build: Path) -> None:
    # java_build compiled everything; this runs JUnit 5 (unit tests, the in-process fake edge,
    # and TLS on loopback) through Maven Surefire.
    run_suite([*MVN, "test"], cwd=JAVA_DIR)
