"""The READMEs' Java paths, to the letter.

- The Java SDK's install path from a fresh Maven project outside the repo: the install command,
  pom.xml, Example.java and run command are read from clients/java/README.md and used as they
  stand; the only change is the address of this test's `pushplat dev` in place of the defaults.
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


def test_readme_other_language_command_makes_java_classes_that_compile(java_build: Path, tmp_path: Path) -> None:
    # Run where a checkout's root would be, on a copy, so that OUT/ and .protoc/ stay out of it.
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "protos", checkout / "protos")
    run_shell(readme_block("other-language", ROOT / "README.md"), checkout)

    generated = sorted((checkout / "OUT").rglob("*.java"))
    package = checkout / "OUT" / "io" / "pushplat" / "v1"
    for name in ("SendRequest", "ClientFrame", "ServerFrame", "Message", "EdgeProto", "PushProto"):
        assert (package / f"{name}.java").is_file(), f"{name}.java not generated: {generated}"
    # They compile against protobuf-java (the SDK's test classpath has it).
    run_shell(
        f"javac -nowarn -d classes -cp '{java_build.read_text().strip()}' "
        + " ".join(f"'{path}'" for path in generated),
        checkout,
    )
    assert (checkout / "classes" / "io" / "pushplat" / "v1" / "SendRequest.class").is_file()
