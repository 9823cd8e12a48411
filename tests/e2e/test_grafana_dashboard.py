"""deploy/grafana/pushplat.json queries only metrics a running pushplat serves, and charts every
metric the README's metrics table lists."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from pushplat_client import PushClient, PushError, PushSender
from pushplat_client.v1 import edge_pb2
from websockets.asyncio.client import connect

from pushplat.edge.websocket import SUBPROTOCOL
from tests.helpers import eventually, free_port
from tests.processes import scrape

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pushplat.json"
METRIC = re.compile(r"\bpushplat_[a-z_]+")


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), str)]
    return {name for expr in exprs for name in METRIC.findall(expr)}


def readme_metrics() -> set[str]:
    section = (ROOT / "README.md").read_text().split("**Metrics.**", 1)[1].split("\n\n", 2)[1]
    return {name for row in section.splitlines() if row.startswith("| `") for name in METRIC.findall(row.split("|")[1])}


def samples(text: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition (not just # HELP lines)."""
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_readme_metric_is_on_the_dashboard():
    listed = readme_metrics()
    assert len(listed) >= 9, listed
    charted = {re.sub(r"_(bucket|sum|count)$", "", name) for name in dashboard_metrics()}
    assert listed <= charted, f"README metrics missing from the dashboard: {sorted(listed - charted)}"


async def test_every_dashboard_metric_exists_in_a_live_metrics_endpoint(processes):
    metrics_port = free_port()
    # Per-label counters exist only for the label keys the operator lists.
    server = await processes.dev(
        "--metrics-port", str(metrics_port), "--metric-label-keys", "variant", "--metric-topics", "g-*", ws=True
    )
    # Traffic that touches every metric: a connect (gRPC and WebSocket), pushes of a labelled
    # message, an ack, a drop for want of a route, a send refused by a limit, and a disconnect.
    async with connect(server.ws_url, subprotocols=[SUBPROTOCOL]) as tab:
        hello = edge_pb2.Hello(user_id="g", device_id="g-tab", client_version="test")
        await tab.send(edge_pb2.ClientFrame(hello=hello).SerializeToString())
        assert edge_pb2.ServerFrame.FromString(await asyncio.wait_for(tab.recv(), 10)).HasField("welcome")
    async with PushSender(server.api) as sender:
        async with PushClient(server.edge, user_id="g", device_id="g-1") as client:
            await client.wait_connected(10)
            sent = await sender.send(device_id="g-1", payload=b"x", labels={"variant": "a"}, at_least_once=True)
            message = await asyncio.wait_for(anext(client), 10)
            assert message.message_id == sent.message_id
            # Topics: a subscription (counted for an allowed topic) and one fan-out.
            assert list((await client.subscribe("g-topic")).applied) == ["g-topic"]
            topical = await sender.send(topic="g-topic", payload=b"t")
            assert (await asyncio.wait_for(anext(client), 10)).message_id == topical.message_id
        await sender.send(device_id="nobody-here", payload=b"dropped")
        with pytest.raises(PushError):
            await sender.send(device_id="d" * 129, payload=b"an id over the limit")
        wanted = dashboard_metrics()

        missing = wanted

        async def all_there() -> bool:
            nonlocal missing
            missing = wanted - samples(await asyncio.to_thread(scrape, metrics_port))
            return not missing

        try:
            await eventually(all_there, 15, what="every dashboard metric in /metrics")
        finally:
            assert not missing, f"the dashboard queries metrics pushplat does not serve: {sorted(missing)}"
