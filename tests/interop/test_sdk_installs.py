"""Each SDK installed the way the README says, into a fresh project outside the repo, receiving
one push from a running `pushplat dev`. The install commands are read from the README's SDK
recipe block and run as they stand, with $PUSHPLAT set to this checkout (and the tarball's
/tmp replaced by a private directory, so parallel runs do not share a file)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path

from pushplat_client import PushSender
from pushplat_client.v1 import push_pb2

from tests.helpers import eventually
from tests.interop.conftest import EVENT_TIMEOUT, JAVA_DIR, ROOT, Platform, readme_block, require_tools, run_step

GO_MODULE = "github.com/pushplat/pushplat/clients/go"
INSTALL_TIMEOUT = 600
LANGUAGES = ("Python", "Go", "Node.js", "Java")

PYTHON_APP = """
import asyncio, json, sys
from pushplat_client import PushClient

async def main() -> None:
    async with PushClient(sys.argv[1], user_id=sys.argv[2], device_id=sys.argv[3]) as client:
        async for message in client:
            print(json.dumps({"message_id": message.message_id, "payload": message.payload.decode()}), flush=True)
            break

asyncio.run(main())
"""

GO_APP = """package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/pushplat/pushplat/clients/go/pushplat"
)

func main() {
	client, err := pushplat.Dial(os.Args[1], pushplat.Options{UserID: os.Args[2], DeviceID: os.Args[3]})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	msg, err := client.Recv(context.Background())
	if err != nil {
		panic(err)
	}
	out, _ := json.Marshal(map[string]string{"message_id": msg.GetMessageId(), "payload": string(msg.GetPayload())})
	fmt.Println(string(out))
}
"""

NODE_APP = """import { PushClient } from "@pushplat/client";

const [edge, userId, deviceId] = process.argv.slice(2);
const client = new PushClient(edge, { userId, deviceId });
for await (const message of client) {
  console.log(JSON.stringify({ message_id: message.messageId, payload: Buffer.from(message.payload).toString() }));
  break;
}
await client.close();
"""


def install(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    run_step(cmd, cwd, env, timeout=INSTALL_TIMEOUT, what="SDK install step")


def readme_recipe(language: str) -> str:
    """The shell lines under `# <language>` in the README's SDK recipe block (up to the next comment
    heading), continuation lines joined."""
    text = (ROOT / "README.md").read_text().split("\n## SDKs\n", 1)[1]
    block = text.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    sections: dict[str, list[str]] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("# "):  # "# Go, in your module: ..." starts a section; other comments do not
            heading = line[2:].split(",")[0].split(":")[0].strip()
            if heading in LANGUAGES:
                current = heading
                sections.setdefault(current, [])
        elif line.strip() and current is not None:
            sections[current].append(line.split("  #", 1)[0].strip())
    assert sections.get(language), f"the README's SDK recipe has no {language!r} section: {sorted(sections)}"
    return "\n".join(sections[language])


def run_recipe(language: str, cwd: Path, env: dict[str, str] | None = None, tmp: Path | None = None) -> str:
    recipe = readme_recipe(language)
    if tmp is not None:
        recipe = recipe.replace(" /tmp", f" {tmp}")
    install(["bash", "-euo", "pipefail", "-c", recipe], cwd, {"PUSHPLAT": str(ROOT), **(env or {})})
    return recipe


async def receives_one_push(platform: Platform, argv: list[str], cwd: Path, lang: str) -> None:
    """Run the app as device `lang-<random>`; once it is connected, send it one message."""
    user, device = f"{lang}-user", f"{lang}-{uuid.uuid4().hex[:8]}"
    # A session of its own, so `go run`'s child goes too if the test gives up on it.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        platform.edge,
        user,
        device,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with PushSender(platform.api) as sender:

            async def connected() -> bool:
                assert proc.returncode is None, (await proc.stderr.read()).decode()[-3000:]
                presence = await sender.get_presence(user)
                return any(d.device_id == device for d in presence.devices)

            await eventually(connected, 60, what=f"the {lang} app to connect")
            sent = await sender.send(device_id=device, payload=f"hello {lang}")
        out, err = await asyncio.wait_for(proc.communicate(), EVENT_TIMEOUT)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert json.loads(out.decode().splitlines()[-1]) == {"message_id": sent.message_id, "payload": f"hello {lang}"}
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def test_python_sdk_from_a_fresh_venv(dev_platform: Platform, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    install([sys.executable, "-m", "venv", str(venv)], tmp_path)
    # "in your virtualenv": its bin/ first on PATH, as `source venv/bin/activate` does.
    recipe = run_recipe("Python", tmp_path, {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)})
    assert recipe == "pip install $PUSHPLAT/clients/python"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert (site / "pushplat_client" / "py.typed").is_file(), "the wheel must ship py.typed"
    assert not (site / "pushplat").exists(), "the SDK must not bring the server package"
    (tmp_path / "app.py").write_text(PYTHON_APP)
    await receives_one_push(dev_platform, [str(venv / "bin" / "python"), "app.py"], tmp_path, "python")


async def test_go_sdk_from_a_fresh_module_with_a_replace_directive(dev_platform: Platform, tmp_path: Path) -> None:
    require_tools("go")
    app = tmp_path / "goapp"
    app.mkdir()
    install(["go", "mod", "init", "example.com/goapp"], app)
    (app / "main.go").write_text(GO_APP)
    recipe = run_recipe("Go", app)
    assert f"-replace={GO_MODULE}=$PUSHPLAT/clients/go" in recipe and "go mod tidy" in recipe
    await receives_one_push(dev_platform, ["go", "run", "."], app, "go")


async def test_typescript_sdk_from_a_fresh_npm_project(dev_platform: Platform, tmp_path: Path) -> None:
    require_tools("node", "npm")
    app, packs = tmp_path / "nodeapp", tmp_path / "packs"
    app.mkdir()
    packs.mkdir()
    install(["npm", "init", "-y"], app)
    recipe = run_recipe("Node.js", app, tmp=packs)
    assert "npm pack" in recipe and "npm install" in recipe
    assert (app / "node_modules" / "@pushplat" / "client" / "dist").is_dir(), "the tarball must carry dist/"
    assert (app / "node_modules" / "@grpc" / "grpc-js").is_dir(), "@grpc/grpc-js must come with the SDK"
    (app / "app.mjs").write_text(NODE_APP)
    await receives_one_push(dev_platform, ["node", "app.mjs"], app, "node")


async def test_java_sdk_from_a_fresh_maven_project(dev_platform: Platform, tmp_path: Path) -> None:
    """The recipe installs into ~/.m2, as a Maven user's does. The project is the Java README's own:
    its pom.xml, Example.java and run command (which sends one push and receives it), to the
    letter but for this platform's address in place of the default ports."""
    require_tools("java", "mvn")
    java_readme = JAVA_DIR / "README.md"
    recipe = run_recipe("Java", tmp_path)
    assert recipe == readme_block(java_readme, "install").strip(), "the two READMEs' Java install differ"
    assert "mvn -q -B install" in recipe

    project = tmp_path / "push-demo"
    (project / "src" / "main" / "java").mkdir(parents=True)
    (project / "pom.xml").write_text(readme_block(java_readme, "pom.xml"))
    (project / "src" / "main" / "java" / "Example.java").write_text(readme_block(java_readme, "Example.java"))
    run = readme_block(java_readme, "run")
    assert "127.0.0.1:50051" in run and "127.0.0.1:50052" in run, run
    run = run.replace("127.0.0.1:50051", dev_platform.edge).replace("127.0.0.1:50052", dev_platform.api)
    out = run_step(["bash", "-euo", "pipefail", "-c", run], project, timeout=INSTALL_TIMEOUT, what="the README's run")
    # Debian's Maven 3.8 prints stray colour resets even with -B; a terminal hides them.
    printed = re.search(r"^sent (\S+), received (\S+): (.*)$", re.sub(r"\x1b\[[0-9;]*m", "", out), re.M)
    assert printed, f"the example printed no receipt line:\n{out}"
    sent, received, payload = printed.groups()
    assert (received, payload) == (sent, "hello from Java")

    # The example's device acked the push (close() flushed the ack): the platform says so.
    async with PushSender(dev_platform.api) as sender:

        async def acked() -> bool:
            status = await sender.get_status(sent)
            return any(d.device_id == "phone" and d.state == push_pb2.DELIVERY_STATE_ACKED for d in status.devices)

        await eventually(acked, EVENT_TIMEOUT, what="the Java example's ack")
