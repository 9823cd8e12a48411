"""The SDK stands alone: grpcio + protobuf only, and no import of the server package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_dependencies_are_grpcio_and_protobuf_only() -> None:
    project = tomllib.loads((SDK_DIR / "pyproject.toml").read_text())["project"]
    names = sorted(dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"])
    assert names == ["grpcio", "protobuf"]


def test_importing_the_sdk_does_not_import_the_server() -> None:
    code = (
        "import sys, pushplat_client, pushplat_client.client, pushplat_client.sender;"
        "bad = sorted(m for m in sys.modules if m == 'pushplat' or m.startswith('pushplat.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api() -> None:
    import pushplat_client as sdk
    from pushplat_client.v1 import message_pb2

    assert sdk.Message is message_pb2.Message
    assert sdk.__version__
    for name in ("PushClient", "PushSender", "Backoff", "PushError", "AuthError", "parse_priority"):
        assert name in sdk.__all__
    assert issubclass(sdk.AuthError, sdk.PushError)
