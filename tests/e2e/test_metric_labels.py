"""Senders choose label values, not the size of /metrics: only the keys the operator lists are
counted per value, with a cap on distinct values; every label still travels in receipts."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY, generate_latest
from pushplat_client.v1 import push_pb2

from tests.helpers import eventually, free_port
from tests.processes import scrape


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


def acked_total(text: str, label: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('pushplat_labelled_events_total{label="' + label + '",state="acked"')
    )


def series(text: str, label: str) -> set[str]:
    """The label values in /metrics of pushplat_labelled_events_total for one label key."""
    values = set()
    for line in text.splitlines():
        if line.startswith("pushplat_labelled_events_total{") and f'label="{label}"' in line:
            values.add(line.split('value="', 1)[1].split('"', 1)[0])
    return values


async def test_only_listed_label_keys_are_counted_with_a_cap_on_values(start_platform, clients):
    # Keys unique to this test: the metrics registry is shared by every test in the process.
    variant, user = f"variant_{uuid.uuid4().hex[:6]}", f"user_{uuid.uuid4().hex[:6]}"
    metrics_port = free_port()
    platform = await start_platform(metric_label_keys=[variant], metric_label_values_max=5, metrics_port=metrics_port)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    api = clients("api", addr(platform.ports.api))
    sent = []
    for i in range(40):
        labels = {variant: f"v{i % 20}", user: f"user-{i}"}
        sent.append(await api.send(device_id="d", payload=b"x", labels=labels))
    got = await device.read_messages(40)
    assert [dict(m.labels) for m in got] == [{variant: f"v{i % 20}", user: f"user-{i}"} for i in range(40)]

    text = ""

    async def every_ack_counted() -> bool:
        nonlocal text
        text = await asyncio.to_thread(scrape, metrics_port)
        return acked_total(text, variant) == 40

    await eventually(every_ack_counted, what="the 40 acks in /metrics")
    values = series(text, variant)
    assert values == {"v0", "v1", "v2", "v3", "v4", "__other__"}, values
    assert series(text, user) == set(), "an unlisted key gets no series at all"
    overflow = [
        line for line in text.splitlines() if line.startswith('pushplat_limits_hit_total{limit="metric_label_values"}')
    ]
    assert overflow and float(overflow[0].rsplit(" ", 1)[1]) > 0
    # Receipts (and so GetStatus and the Kafka events) keep every label.
    status = await api.stub.GetStatus(push_pb2.GetStatusRequest(message_id=sent[39].message_id), timeout=5)
    assert dict(status.labels) == {variant: "v19", user: "user-39"}


async def test_no_label_is_counted_unless_the_operator_asks(platform, clients):
    key = f"campaign_{uuid.uuid4().hex[:6]}"
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    api = clients("api", addr(platform.ports.api))
    for i in range(20):
        await api.send(device_id="d", payload=b"x", labels={key: str(i)})
    await device.read_messages(20)
    assert f'label="{key}"' not in generate_latest(REGISTRY).decode()
