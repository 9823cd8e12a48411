"""Issue 13 in a real browser: the demo page (pushplat/web/static) in headless Chromium, as a
device of a running pushplat, over the edge's WebSocket port."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pushplat_client import PushClient, PushSender
from pushplat_client.v1 import push_pb2

from pushplat import web
from pushplat.auth import mint_token
from tests.helpers import eventually, free_port
from tests.interop.conftest import GO_DIR, run_build
from tests.processes import scrape

pytestmark = pytest.mark.timeout(240)
CONNECT_TIMEOUT = 20.0
EVENT_TIMEOUT = 15.0
SECRET = "browser-test-secret-0123456789abcdef0123"


def page_url(base: str, **params: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in {"autoconnect": "1", **params}.items())
    return f"{base}?{query}"


def shown(message_id: str) -> Any:
    return lambda demo: any(m["id"] == message_id for m in demo.get("messages", []))


def connected(demo: dict[str, Any]) -> bool:
    return demo.get("state") == "connected"


async def acked_by(sender: PushSender, message_id: str, device_id: str) -> bool:
    status = await sender.get_status(message_id)
    return any(d.device_id == device_id and d.state == push_pb2.DELIVERY_STATE_ACKED for d in status.devices)


async def test_the_demo_page_receives_a_push_acks_it_and_status_says_acked(processes, browser, tmp_path: Path):
    dev = await processes.dev(ws=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="alice", device="alice-tab"))
    demo = await page.wait(connected, CONNECT_TIMEOUT, "the demo page to connect")
    assert demo["connects"] == 1 and demo["edgeId"]

    async with PushSender(dev.api) as sender:
        sent = await sender.send(device_id="alice-tab", payload="hello from Push.Send", priority="high")
        demo = await page.wait(shown(sent.message_id), EVENT_TIMEOUT, "the push on the page")
        [message] = [m for m in demo["messages"] if m["id"] == sent.message_id]
        assert message["payload"] == "hello from Push.Send"
        assert message["priority"] == "high"
        assert 0 <= message["latencyMs"] < 10_000
        await eventually(
            lambda: acked_by(sender, sent.message_id, "alice-tab"), EVENT_TIMEOUT, "GetStatus: ACKED for alice-tab"
        )
    table = await page.text("messages")
    assert "hello from Push.Send" in table and sent.message_id in table and "high" in table
    assert await page.rows_with(sent.message_id) == 1
    assert (await page.text("state")) == "connected"
    shot = await page.screenshot("demo-page-after-test-1.png", tmp_path)
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas


async def test_an_at_least_once_message_sent_while_the_tab_was_closed_is_replayed_once(processes, browser):
    dev = await processes.dev(ws=True)
    page = await browser()
    url = page_url(dev.page_url, user="bob", device="bob-tab")
    await page.open(url)
    await page.wait(connected, CONNECT_TIMEOUT, "the demo page to connect")
    await page.close_tab()
    async with PushSender(dev.api) as sender:

        async def tab_gone() -> bool:
            presence = await sender.get_presence("bob")
            return not any(d.device_id == "bob-tab" for d in presence.devices)

        await eventually(tab_gone, EVENT_TIMEOUT, "the closed tab's session to end")
        sent = await sender.send(device_id="bob-tab", payload="sent while closed", at_least_once=True)
        status = await sender.get_status(sent.message_id)
        assert not any(d.state == push_pb2.DELIVERY_STATE_ACKED for d in status.devices)

        await page.open(url)
        demo = await page.wait(shown(sent.message_id), CONNECT_TIMEOUT, "the replayed message")
        await eventually(lambda: acked_by(sender, sent.message_id, "bob-tab"), EVENT_TIMEOUT, "the replay's ack")
        assert [m["payload"] for m in (await page.demo())["messages"]] == ["sent while closed"]
        assert await page.rows_with(sent.message_id) == 1
        # A second connection must not bring it again: the ack emptied the inbox.
        await page.open(url)
        demo = await page.wait(connected, CONNECT_TIMEOUT, "the page to connect again")
        marker = await sender.send(device_id="bob-tab", payload="after the replay")
        demo = await page.wait(shown(marker.message_id), EVENT_TIMEOUT, "a live message after the replay")
    assert [m["id"] for m in demo["messages"]] == [marker.message_id]
    assert await page.rows_with(sent.message_id) == 0


async def test_the_first_open_shows_the_replayed_message_once(processes, browser):
    """The replay and a duplicate of it (redelivered before the ack landed) show as one row."""
    dev = await processes.dev(ws=True)
    async with PushSender(dev.api) as sender:
        first = await sender.send(device_id="carol-tab", payload="one", at_least_once=True)
        second = await sender.send(device_id="carol-tab", payload="two", at_least_once=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="carol", device="carol-tab"))
    demo = await page.wait(
        lambda d: shown(first.message_id)(d) and shown(second.message_id)(d), CONNECT_TIMEOUT, "both replayed messages"
    )
    assert [m["payload"] for m in demo["messages"]] == ["one", "two"]
    assert await page.rows_with(first.message_id) == 1


async def test_a_draining_edge_sends_the_page_to_the_other_edge_and_it_keeps_receiving(deployment, browser):
    await deployment.api()
    await deployment.router()
    a = await deployment.edge("--drain-seconds", "1", "--goaway-grace-seconds", "2", ws=True)
    b = await deployment.edge("--drain-seconds", "1", "--goaway-grace-seconds", "2", ws=True)
    api = deployment.roles[0]
    edges = {deployment.edge_id("edge0"): a, deployment.edge_id("edge1"): b}
    page = await browser()
    # The page lists both edges; each attempt takes the next one.
    await page.open(page_url(a.page_url, user="dave", device="dave-tab", edges=f"{a.ws_url},{b.ws_url}"))
    demo = await page.wait(connected, CONNECT_TIMEOUT, "the page to connect to an edge")
    first_edge = demo["edgeId"]
    assert first_edge in edges
    async with PushSender(api.address) as sender:
        before = await sender.send(user_id="dave", payload="before the drain")
        await page.wait(shown(before.message_id), EVENT_TIMEOUT, "a message before the drain")

        draining = edges[first_edge]
        draining.send_signal(signal.SIGTERM)
        demo = await page.wait(
            lambda d: d.get("goAways") and connected(d) and d.get("edgeId") not in ("", first_edge),
            CONNECT_TIMEOUT,
            "a GoAway, then a connection to the other edge",
        )
        assert "DRAINING" in demo["goAways"][-1]
        delay = int(re.search(r"reconnect_after_ms=(\d+)", demo["goAways"][-1]).group(1))
        assert demo["connects"] == 2
        assert await draining.wait(30) == 0

        # The router finds the page on its new edge.
        async def delivered() -> bool:
            sent = await sender.send(user_id="dave", payload="after the drain")
            try:
                await page.wait(shown(sent.message_id), 2, "a message after the drain")
            except pytest.fail.Exception:
                return False
            return True

        await eventually(delivered, EVENT_TIMEOUT, "a message through the other edge")
    events = "\n".join(demo["events"])
    assert f"in={delay}ms" in events, events  # the SDK waited the GoAway's delay, not a backoff


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_site() -> Iterator[str]:
    """The demo page served from another origin (http://localhost:PORT, a plain static server)."""
    handler = functools.partial(_Quiet, directory=str(web.STATIC))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def handshakes(text: str, result: str) -> float:
    found = re.search(rf'^pushplat_ws_handshakes_total{{result="{result}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_page_from_a_disallowed_origin_is_refused_and_so_is_a_bad_token(processes, browser, other_site):
    metrics = free_port()
    # Pages from 127.0.0.1 (the edge's own demo page) only; other_site is http://localhost:PORT.
    allowed = "http://127.0.0.1:*"
    dev = await processes.dev(
        "--auth-secret", SECRET, "--metrics-port", str(metrics), "--ws-allowed-origins", allowed, ws=True
    )
    token = mint_token(SECRET, "erin", "erin-tab", 600)

    # From another site: the handshake is refused (403), again on each retry; no Welcome ever.
    foreign = await browser()
    await foreign.open(page_url(other_site, token=token, edges=dev.ws_url))
    await eventually(
        lambda: asyncio.to_thread(lambda: handshakes(scrape(metrics), "origin") >= 2),
        EVENT_TIMEOUT,
        "two refused handshakes from the foreign page",
    )
    demo = await foreign.demo()
    assert demo["state"] != "connected" and demo["connects"] == 0, demo
    assert handshakes(scrape(metrics), "ok") == 0

    # The same page and token from an allowed origin connects.
    page = await browser()
    await page.open(page_url(dev.page_url, token=token))
    demo = await page.wait(connected, CONNECT_TIMEOUT, "the page from the allowed origin to connect")
    assert handshakes(scrape(metrics), "ok") >= 1

    # A bad token: the edge closes with 4016 (UNAUTHENTICATED); the SDK stops instead of retrying.
    forged = mint_token("another-secret-0123456789abcdef0123456789", "erin", "erin-tab", 600)
    bad = await browser()
    await bad.open(page_url(dev.page_url, token=forged))
    demo = await bad.wait(lambda d: d.get("state") == "stopped", CONNECT_TIMEOUT, "the bad token to be refused")
    assert demo["error"]["code"] == 16, demo
    assert demo["connects"] == 0
    assert "UNAUTHENTICATED" in await bad.text("detail")


@pytest.fixture(scope="module")
def go_listener(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("go-interop") / "go-interop"
    run_build(["go", "build", "-buildvcs=false", "-o", str(out), "./cmd/interop"], cwd=GO_DIR)
    return out


async def test_python_go_and_browser_devices_of_one_user_each_get_one_fan_out_message(
    processes, browser, go_listener: Path
):
    dev = await processes.dev(ws=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="frank", device="frank-tab"))
    await page.wait(connected, CONNECT_TIMEOUT, "the browser device to connect")

    go = await asyncio.create_subprocess_exec(
        str(go_listener),
        *("listen", "--edge", dev.edge, "--user", "frank", "--device", "frank-go", "--count", "1"),
        *("--timeout-ms", "30000"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    processes.clients.append(go)
    assert go.stdout is not None
    event = json.loads(await asyncio.wait_for(go.stdout.readline(), EVENT_TIMEOUT))
    assert event["event"] == "connected", event

    async with PushClient(dev.edge, user_id="frank", device_id="frank-py") as python_device:
        await python_device.wait_connected(timeout=EVENT_TIMEOUT)
        async with PushSender(dev.api) as sender:
            presence = await sender.get_presence("frank")
            assert {d.device_id for d in presence.devices} == {"frank-tab", "frank-go", "frank-py"}
            sent = await sender.send(user_id="frank", payload="to every device of frank")
            got = await asyncio.wait_for(anext(aiter(python_device)), EVENT_TIMEOUT)
            assert (got.message_id, got.payload) == (sent.message_id, b"to every device of frank")
            line = json.loads(await asyncio.wait_for(go.stdout.readline(), EVENT_TIMEOUT))
            assert line["event"] == "message" and line["message_id"] == sent.message_id, line
            assert line["payload"] == "to every device of frank"
            demo = await page.wait(shown(sent.message_id), EVENT_TIMEOUT, "the fan-out on the page")
            assert [m["payload"] for m in demo["messages"]] == ["to every device of frank"]
            for device in ("frank-tab", "frank-go", "frank-py"):
                await eventually(
                    lambda d=device: acked_by(sender, sent.message_id, d), EVENT_TIMEOUT, f"{device}'s ack"
                )
    assert await asyncio.wait_for(go.wait(), EVENT_TIMEOUT) == 0
