"""The READMEs' Java paths, to the letter.

- The Java SDK's install path from a fresh Maven project outside the repo: the install command,
  pom.xml, Example.java and run command are read from clients/java/README.md and used as they
  stand; the only change is the address of this test's `pushplat dev` in place of the defaults.
  As the README says, the install goes into the user's local Maven repository (~/.m2).
- The top-level README's "any other language" command for Java, run on a copy of protos/.

Blocks are the fenced code blocks after `<!-- tested: NAME -->`.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import grpc
import pytest
from pushplat_client.v1 import push_pb2, push_pb2_grpc

from tests.interop.conftest import JAVA_DIR, ROOT, Platform, require_tools, run_build

README = JAVA_DIR / "README.md"


def readme_block(name: str, readme: Path = README) -> str:
    """The fenced code block that follows `<!-- tested: name -->` in a README."""
    text = readme.read_text()
    marker = f"<!-- tested: {name} -->"
    at = text.find(marker)
    if at < 0:
        pytest.fail(f"{readme} has no {marker!r}: this test follows the README's blocks")
    block = re.compile(r"```[A-Za-z]*\n(.*?)```", re.S).search(text, at + len(marker))
    assert block is not None, f"no code block after {marker!r}"
    return block.group(1)


def run_shell(script: str, cwd: Path) -> str:
    return run_build(["bash", "-euo", "pipefail", "-c", script], cwd)


def test_readme_install_path_from_a_fresh_maven_project(dev_platform: Platform, tmp_path: Path) -> None:
    require_tools("java", "mvn")
    # 1. Install the SDK from the checkout, from the repository root, as the README says.
    run_shell(readme_block("install"), ROOT)

    # 2. A new project outside the repository: the README's pom.xml and Example.java.
    project = tmp_path / "push-demo"
    assert not project.resolve().is_relative_to(ROOT)
    (project / "src" / "main" / "java").mkdir(parents=True)
    (project / "pom.xml").write_text(readme_block("pom.xml"))
    (project / "src" / "main" / "java" / "Example.java").write_text(readme_block("Example.java"))

    # 3. Its run command, against this platform instead of the default ports.
    run = readme_block("run")
    assert "127.0.0.1:50051" in run and "127.0.0.1:50052" in run, run
    run = run.replace("127.0.0.1:50051", dev_platform.edge).replace("127.0.0.1:50052", dev_platform.api)
    # Debian's Maven 3.8 prints stray colour resets even with -B; the terminal hides them.
    out = re.sub(r"\x1b\[[0-9;]*m", "", run_shell(run, project))

    printed = re.search(r"^sent (\S+), received (\S+): (.*)$", out, re.M)
    assert printed, f"the example printed no receipt line:\n{out}"
    sent, received, payload = printed.groups()
    assert (received, payload) == (sent, "hello from Java")

    # The example's device acked the push (close() flushed it): the platform says so.
    with grpc.insecure_channel(dev_platform.api) as channel:
        stub = push_pb2_grpc.PushStub(channel)
        deadline = time.monotonic() + 10
        while True:
            status = stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent), timeout=5)
            if any(d.device_id == "phone" and d.state == push_pb2.DELIVERY_STATE_ACKED for d in status.devices):
                break
            assert time.monotonic() < deadline, f"no ACKED for the example's device: {status}"
            time.sleep(0.05)


def test_readme_other_language_command_makes_the_java_classes_the_sdk_ships(tmp_path: Path) -> None:
    require_tools("mvn")
    # Run where a checkout's root would be, on a copy, so that OUT/ and .protoc/ stay out of it.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "protos", checkout / "protos")
    run_shell(readme_block("other-language", ROOT / "README.md"), checkout)

    # The same protoc as scripts/gen-protos, so exactly the classes clients/java ships, which
    # compile and pass the SDK's tests. A README that drifts from the pom's version fails here.
    generated = checkout / "OUT" / "io" / "pushplat" / "v1"
    shipped = JAVA_DIR / "src" / "main" / "java" / "io" / "pushplat" / "v1"
    names = sorted(path.name for path in generated.glob("*.java"))
    assert "SendRequest.java" in names and "ClientFrame.java" in names, names
    assert names == sorted(path.name for path in shipped.glob("*.java"))
    for name in names:
        assert (generated / name).read_bytes() == (shipped / name).read_bytes(), f"{name} differs from the SDK's"
