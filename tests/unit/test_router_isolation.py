"""The router's delivery path in isolation: per-edge queues, circuit breakers, commit watermarks
and the limits on all of them (fakes for the edges and the lanes; the fault suite in
tests/faults runs the same against real processes)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from pushplat.queue import Record
from pushplat.registry import Route
from pushplat.registry.memory import MemoryRegistry
from pushplat.router.breaker import CircuitBreaker, CircuitState
from pushplat.router.commits import CommitTracker
from pushplat.v1 import delivery_pb2
from tests.helpers import eventually
from tests.unit.router_fakes import Edges, Lanes, router, to_device


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_breaker_opens_after_consecutive_failures_probes_and_closes():
    now = [0.0]
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(3, 1.0, on_change=lambda a, b: changes.append((a.value, b.value)), clock=lambda: now[0])
    assert not breaker.failure() and not breaker.failure()
    breaker.success()  # consecutive: a success in between starts the count again
    assert not breaker.failure() and not breaker.failure()
    assert breaker.closed
    assert breaker.failure(), "the third failure in a row opens it"
    assert breaker.state is CircuitState.OPEN and breaker.seconds_until_probe() == 1.0
    now[0] = 1.0
    breaker.half_open()
    assert breaker.failure(), "a failed probe opens it again"
    assert breaker.seconds_until_probe() == 2.0, "for twice as long"
    for _ in range(10):
        breaker.half_open()
        breaker.failure()
    assert breaker.open_seconds == 30.0, "up to 30 s"
    breaker.half_open()
    breaker.success()
    assert breaker.closed and breaker.open_seconds == 1.0
    assert changes[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    assert changes[-1] == ("half_open", "closed")


def records(partition: int, offsets: range) -> list[Record]:
    return [Record("normal", delivery_pb2.Envelope(), ("normal", partition, o)) for o in offsets]


def test_commits_stop_at_the_lowest_record_not_done_in_each_partition():
    tracker = CommitTracker()
    p0 = tracker.track(records(0, range(5)))
    p1 = tracker.track(records(1, range(3)))
    assert tracker.size == 8
    for entry in (p0[1], p0[2], p0[4], p1[0]):  # out of order, as edges answer
        tracker.finish(entry)
    assert [m.position for m in tracker.committable()] == [("normal", 1, 0)], "p0's offset 0 is not done"
    tracker.finish(p0[0])
    assert [m.position for m in tracker.committable()] == [("normal", 0, 2)], "up to 2: offset 3 is still out"
    assert tracker.committable() == [], "nothing new"
    tracker.expect(p0[3], 2)  # two deliveries (say, two devices of a user)
    tracker.settle(p0[3])
    assert tracker.committable() == []
    tracker.settle(p0[3])
    assert [m.position for m in tracker.committable()] == [("normal", 0, 4)]
    assert tracker.size == 2 and tracker.open == 0
    assert p0[3].record is None, "a done record no longer holds its message"


def test_commit_markers_of_a_failed_commit_come_back_with_the_next():
    tracker = CommitTracker()
    entries = tracker.track(records(0, range(3)))
    tracker.finish(entries[0])
    failed = tracker.committable()
    tracker.requeue(failed)
    assert [m.position for m in tracker.committable()] == [("normal", 0, 0)]
    tracker.finish(entries[1])
    tracker.requeue(failed)  # an older marker never hides a newer one
    assert [m.position for m in tracker.committable()] == [("normal", 0, 1)]


async def routed_platform(edges: Edges, devices: dict[str, str], **config: object):
    registry = MemoryRegistry()
    for edge_id in sorted(set(devices.values())):
        await registry.set_edge(edge_id, f"{edge_id}:1", 60)
    for device_id, edge_id in devices.items():
        await registry.register(Route(device_id, f"u-{device_id}", edge_id, f"s-{device_id}"), 60)
    lanes = Lanes()
    node = router(lanes, edges, registry, **config)
    await node.start()
    return lanes, node


async def test_a_hung_edge_delays_only_its_own_devices_and_opens_its_breaker():
    edges = Edges()
    edges.hung.add("dead")
    lanes, node = await routed_platform(edges, {"ok-1": "ok", "gone-1": "dead"}, edge_breaker_failures=2)
    try:
        opened = metric("pushplat_router_edge_circuit_changes_total", state="open")
        for i in range(20):
            lanes.publish(to_device("gone-1", f"g{i}"))
            lanes.publish(to_device("ok-1", f"m{i}"))
        # The healthy edge gets everything while the hung one's first call is still out.
        await eventually(lambda: len(edges.delivered["ok"]) == 20, 2, what="the healthy edge's messages")
        assert edges.delivered["ok"] == [f"m{i}" for i in range(20)], "in order"
        assert edges.calls["dead"] == 1 and edges.in_flight["dead"] == 1, "its first call is still out"
        # That call times out (0.2 s); the next one opens the breaker (edge_breaker_failures=2).
        await eventually(lambda: edges.in_flight["dead"] == 0, 2, what="the first call's deadline")
        lanes.publish(to_device("gone-1", "g20"))
        await eventually(
            lambda: node.queues.queues["dead"].breaker.state is not CircuitState.CLOSED, 3, what="the breaker"
        )
        assert metric("pushplat_router_edge_circuit_changes_total", state="open") == opened + 1
        await eventually(lambda: node.tracker.size == 0, 3, what="every record settled")
        # The commit loop commits what settled in its own turn.
        await eventually(
            lambda: lanes.committed[("normal", 0)] == 41,
            3,
            what="all 41 committed: at-least-once ones wait in the inbox",
        )
        assert await node.inbox.size("gone-1") == 21
        refused = metric("pushplat_messages_dropped_total", reason="edge_unavailable")
        lanes.publish(to_device("gone-1", "g21"))
        await eventually(
            lambda: metric("pushplat_messages_dropped_total", reason="edge_unavailable") == refused + 1,
            2,
            what="an open circuit to refuse at once",
        )
        for i in range(5):
            lanes.publish(to_device("ok-1", f"n{i}"))
        await eventually(lambda: len(edges.delivered["ok"]) == 25, 2, what="more for the healthy edge")
        # The edge recovers: a probe (an empty Deliver) closes the breaker and deliveries resume.
        edges.release("dead")
        await eventually(lambda: node.queues.queues["dead"].breaker.closed, 3, what="the probe to close it")
        lanes.publish(to_device("gone-1", "after"))
        await eventually(lambda: edges.delivered["dead"] == ["after"], 2, what="delivery to the recovered edge")
        assert edges.most_in_flight == {"ok": 1, "dead": 1}, "one call in flight per edge"
    finally:
        await node.stop()


async def test_commits_wait_for_the_slow_edge_but_deliveries_do_not():
    edges = Edges()
    edges.hung.add("slow")
    lanes, node = await routed_platform(edges, {"a": "ok", "b": "slow"}, deliver_timeout_seconds=30)
    try:
        lanes.publish(to_device("a", "m0"))
        lanes.publish(to_device("b", "m1"))  # offset 1 waits on the slow edge
        lanes.publish(to_device("a", "m2"))
        await eventually(lambda: edges.delivered["ok"] == ["m0", "m2"], 2, what="the fast edge")
        await eventually(lambda: lanes.committed.get(("normal", 0)) == 1, 2, what="the commit of offset 0")
        assert node.tracker.size == 2, "offset 2 is done but waits behind offset 1"
        edges.release("slow")
        await eventually(lambda: lanes.committed.get(("normal", 0)) == 3, 2, what="the commit of everything")
    finally:
        await node.stop()


@pytest.mark.parametrize(
    ("option", "payload", "fitted"),
    [
        # One call in flight (m0), five queued (m1-m5), four refused.
        ({"edge_queue_messages": 5}, b"x", 6),
        # m0 in flight; m1 and m2 fit in 3,000 bytes (1,000 B payloads and a few bytes of fields).
        ({"edge_queue_bytes": 3000}, b"p" * 1000, 3),
    ],
    ids=["messages", "bytes"],
)
async def test_edge_queue_limits_refuse_and_count_the_excess(option, payload, fitted):
    edges = Edges()
    edges.hung.add("slow")
    lanes, node = await routed_platform(edges, {"a": "slow"}, deliver_timeout_seconds=30, router_batch_size=1, **option)
    limit = "edge_queue_" + next(iter(option)).rsplit("_", 1)[1]
    try:
        hit = metric("pushplat_limits_hit_total", limit=limit)
        full = metric("pushplat_messages_dropped_total", reason="edge_queue_full")
        for i in range(10):
            lanes.publish(to_device("a", f"m{i}", at_least_once=False, payload=payload))
        await eventually(
            lambda: metric("pushplat_limits_hit_total", limit=limit) == hit + 10 - fitted,
            2,
            what="the excess to be refused",
        )
        assert node.queues.queues["slow"].pending.buffered() == fitted - 1
        assert metric("pushplat_messages_dropped_total", reason="edge_queue_full") == full + 10 - fitted
        edges.release("slow")
        await eventually(lambda: len(edges.delivered["slow"]) == fitted, 2, what="what fitted")
        assert edges.delivered["slow"] == [f"m{i}" for i in range(fitted)]
    finally:
        await node.stop()


async def test_in_flight_limit_stops_fetching_until_commits_catch_up():
    edges = Edges()
    edges.hung.add("slow")
    lanes, node = await routed_platform(
        edges, {"a": "slow", "b": "ok"}, deliver_timeout_seconds=30, router_max_in_flight=10, router_batch_size=4
    )
    try:
        hit = metric("pushplat_limits_hit_total", limit="router_in_flight")
        lanes.publish(to_device("a", "stuck"))
        for i in range(30):
            lanes.publish(to_device("b", f"m{i}"))
        await eventually(
            lambda: metric("pushplat_limits_hit_total", limit="router_in_flight") == hit + 1,
            2,
            what="the in-flight limit",
        )
        assert node.tracker.size == 10 and len(lanes.waiting) == 21, "the rest stays in the lane"
        edges.release("slow")
        await eventually(lambda: len(edges.delivered["ok"]) == 30, 3, what="the rest, once commits moved on")
        await eventually(lambda: lanes.committed.get(("normal", 0)) == 31, 2, what="everything committed")
    finally:
        await node.stop()


async def test_high_overtakes_normal_queued_for_a_busy_edge():
    edges = Edges()
    edges.hung.add("busy")
    lanes, node = await routed_platform(edges, {"a": "busy"}, deliver_timeout_seconds=30, router_batch_size=8)
    try:
        lanes.publish(to_device("a", "first"))
        await eventually(lambda: edges.calls["busy"] == 1, 2, what="the first call")
        for i in range(8):
            lanes.publish(to_device("a", f"n{i}"))
        lanes.publish(to_device("a", "urgent"), lane="high")
        await eventually(lambda: node.queues.queues["busy"].pending.buffered() == 9, 2, what="the backlog")
        edges.release("busy")
        await eventually(lambda: len(edges.delivered["busy"]) == 10, 2, what="everything")
        assert edges.delivered["busy"][:2] == ["first", "urgent"]
        assert edges.delivered["busy"][2:] == [f"n{i}" for i in range(8)]
    finally:
        await node.stop()


async def test_idle_edge_queues_are_retired(monkeypatch):
    from pushplat.router import edges as edges_module

    monkeypatch.setattr(edges_module, "IDLE_SECONDS", 0.1)
    edges = Edges()
    lanes, node = await routed_platform(edges, {"a": "ok"})
    try:
        lanes.publish(to_device("a", "m"))
        await eventually(lambda: edges.delivered["ok"] == ["m"], 2, what="the delivery")
        await eventually(lambda: "ok" not in node.queues.queues, 2, what="the idle queue to go")
        lanes.publish(to_device("a", "again"))
        await eventually(lambda: edges.delivered["ok"] == ["m", "again"], 2, what="a new queue")
    finally:
        await node.stop()


async def test_stop_waits_for_deliveries_in_flight_and_commits_them():
    edges = Edges()
    edges.hung.add("ok")
    lanes, node = await routed_platform(edges, {"a": "ok"}, deliver_timeout_seconds=5)
    lanes.publish(to_device("a", "m"))
    await eventually(lambda: edges.calls["ok"] == 1, 2, what="the call")
    stopping = asyncio.create_task(node.stop())
    edges.release("ok")
    await asyncio.wait_for(stopping, 5)
    assert lanes.committed[("normal", 0)] == 1
