"""constraints.txt pins every Python dependency; scripts/test's venv and the Dockerfile use it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            found[canonical(name)] = version
    return found


def declared() -> set[str]:
    names = set()
    for path in (ROOT / "pyproject.toml", ROOT / "clients" / "python" / "pyproject.toml"):
        project = tomllib.loads(path.read_text())["project"]
        specs = [
            *project["dependencies"],
            *(d for group in project.get("optional-dependencies", {}).values() for d in group),
        ]
        names |= {canonical(re.match(r"[A-Za-z0-9_.-]+", spec).group(0)) for spec in specs}
    return names - {"pushplat-client"}  # the SDK is this repository's own


def test_every_declared_dependency_is_pinned():
    missing = declared() - set(pins())
    assert not missing, f"add exact pins for {sorted(missing)} to constraints.txt"


def test_the_environment_runs_the_pinned_versions():
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. a test-only pin in an environment installed without the test extras
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs pinned: {wrong} (scripts/lib/bootstrap.sh installs with constraints.txt)"


def test_the_dockerfile_and_bootstrap_install_with_the_constraints():
    dockerfile = (ROOT / "Dockerfile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("--constraint /app/constraints.txt" in line for line in installs), installs
    assert "COPY constraints.txt" in dockerfile
    assert '--constraint "$ROOT/constraints.txt"' in (ROOT / "scripts" / "lib" / "bootstrap.sh").read_text()
