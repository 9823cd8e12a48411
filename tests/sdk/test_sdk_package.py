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


def test_no_sdk_ships_the_internal_delivery_api() -> None:
    import importlib.util

    root = SDK_DIR.parents[1]
    assert importlib.util.find_spec("pushplat_client.v1.delivery_pb2") is None
    assert not list((SDK_DIR / "pushplat_client").rglob("delivery*"))
    assert not list((root / "clients" / "go" / "pushplatv1").glob("delivery*"))
    assert not list((root / "clients" / "typescript" / "src" / "gen").rglob("delivery*"))
    for folder in ("clients/go/pushplatv1", "clients/typescript/src/gen", "clients/python/pushplat_client"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in (".go", ".ts", ".py", ".pyi"):
                assert "DeliverRequest" not in path.read_text(), path
    # The server has them, as its own.
    from pushplat.v1 import delivery_pb2_grpc

    assert delivery_pb2_grpc.DeliveryStub
