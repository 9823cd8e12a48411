"""The fault suite (issue 10): one fault per test, each on fresh api, router and edge processes
(and its own Redis or Kafka where it breaks them), with at-least-once traffic flowing at 40
messages/s to 20 devices on the Python SDK, then a bounded settle. Each test prints its counts
(see harness.py) and asserts 0 lost and 0 duplicates at the app for every accepted message.

kill -9 of an edge runs KILL_EDGE_RUNS times: the loss the issue saw (6 messages, once in three
runs) had a per-run probability of about 1/3, and 8 independent runs catch such a loss with
probability 1 - (2/3)^8 = 96%, for about 4 minutes of CI time.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pushplat_client import PushSender
from redis.asyncio.cluster import RedisCluster

from pushplat.config import Config
from pushplat.inbox.redis import RedisInbox
from pushplat.queue.kafka import KafkaSettings
from pushplat.registry.redis import RedisRegistry
from tests.faults.conftest import shared_deployment, start_platform
from tests.faults.harness import Fleet, Tally, assert_clean, explain_losses, settle, traffic, warm_up
from tests.helpers import eventually
from tests.processes import Deployment, Role, service

pytestmark = [pytest.mark.redis, pytest.mark.kafka]

TRAFFIC_SECONDS = 10
FAULT_AT = 3  # seconds into the traffic
# The routers' consumer group, at the defaults the roles run with. After a router is killed the
# coordinator drops it within the session timeout; a router killed while leading a rebalance
# costs one more (its SyncGroup never comes; test_router_killed_during_a_rebalance); the others
# notice within a heartbeat interval and read on from the committed offsets. So its records
# arrive within 2 x 10 + 3 s of the kill, plus their delivery: well within the settle (45 s
# after the traffic, 52 s after the kill); a loss there is a stall, not a slow takeover.
SESSION_TIMEOUT_MS = Config().kafka_session_timeout_ms
HEARTBEAT_INTERVAL_MS = KafkaSettings([], session_timeout_ms=SESSION_TIMEOUT_MS).heartbeat_interval_ms
KILL_EDGE_RUNS = 8
# Kafka stopped, then started: the api's publish timeout, the traffic once the broker is back,
# and how soon after that every Send must be accepted again. The publish timeout is 5 s, not
# the default 10, to keep the outage short; at 2 s the freshly restarted broker's first produce
# requests here outlasted their 1 s request timeout, and those Sends were rightly refused. The
# api finds its producer stuck during the outage (an expired batch), and replaces it once the
# broker answers: kafka-python reaches it within its reconnect backoff (at most 2 s), or the
# next attempt starts after a 1 s pause; building the new producer and discarding the old one
# took 1-2 s here (allow 3). A Send made meanwhile went to the old producer and is refused at
# the swap: 2 + 1 + 3 s.
KAFKA_PUBLISH_TIMEOUT = 5
AFTER_KAFKA_SECONDS = 15
KAFKA_RECOVERY_SECONDS = 6
# 400 messages are sent in 10 s; a fault may cost some (UNAVAILABLE), never half of them.
MIN_ACCEPTED = 200

Fault = Callable[[Deployment, Role, list[Role], list[Role], Fleet, Tally], Awaitable[object]]
# Traffic of its own once the fault is over (it goes into the same tally).
AfterFault = Callable[[PushSender, Fleet, Tally], Awaitable[object]]


async def run_fault(
    name: str,
    deployment: Deployment,
    fault: Fault | None,
    *,
    seconds: float = TRAFFIC_SECONDS,
    to_users: bool = True,
    min_accepted: int = MIN_ACCEPTED,
    after_fault: AfterFault | None = None,
    **platform: object,
) -> tuple[Fleet, list[Role], Tally]:
    """Start the platform, connect the fleet, warm up, run the traffic with the fault (and then
    after_fault), settle and assert. Returns what the test may check further (the fleet is
    closed by then)."""
    api, routers, edges = await start_platform(deployment, **platform)  # type: ignore[arg-type]
    fleet = Fleet([e.address for e in edges])
    tally = Tally()
    try:
        await fleet.connect()
        async with PushSender(api.address) as sender:
            await warm_up(fleet, sender)
            await every_router_holds_partitions(routers)
            run = (lambda: fault(deployment, api, routers, edges, fleet, tally)) if fault else None
            await traffic(sender, fleet, seconds, tally=tally, to_users=to_users, fault=run, fault_at=FAULT_AT)
            if after_fault is not None:
                await after_fault(sender, fleet, tally)
            counts = await settle(name, tally, fleet)
            if counts.lost:
                print(router_states(routers), flush=True)
                inbox = RedisInbox.from_url(deployment.registry)
                try:
                    await explain_losses(counts, tally, inbox, sender)
                finally:
                    await inbox.close()
        assert_clean(counts, min_accepted=min_accepted)
        return fleet, edges, tally
    finally:
        await fleet.close()


async def test_no_fault(tmp_path: Path):
    deployment = shared_deployment(tmp_path)
    try:
        await run_fault("no fault", deployment, None)
    finally:
        await deployment.stop()


async def test_router_killed(tmp_path: Path):
    async def kill_router(deployment, api, routers, edges, fleet, tally):
        await routers[0].kill()
        assert routers[1].running, f"the other router is there to take over:\n{router_states(routers)}"

    deployment = shared_deployment(tmp_path)
    try:
        await run_fault("kill -9 router", deployment, kill_router)
    finally:
        await deployment.stop()


def group_leader(routers: list[Role]) -> int:
    """The index of the router that led the group's latest generation (kafka-python logs
    "Elected group leader" on the leader only, after its "Successfully joined")."""
    latest = {
        i: max(re.findall(r"^(\S+ \S+) INFO kafka.coordinator Elected group leader", r.log(), re.M), default="")
        for i, r in enumerate(routers)
    }
    return max(latest, key=lambda i: latest[i])


def assignment(router: Role) -> str:
    """The partitions the router was last assigned ("" for none), from its log."""
    found = re.findall(r"event=kafka\.partitions_assigned group=\S+ partitions=(\S*)", router.log())
    return found[-1].strip('"') if found else ""


async def every_router_holds_partitions(routers: list[Role]) -> None:
    """The premise of a router fault: each router serves a share of the lanes, so that killing
    one leaves a live member to take its share. (A router still joining when the traffic starts
    would take its share in a rebalance of its own.) A joining member's rebalance ends once
    every member has rejoined at its next poll (routers poll at least every second; the wait is
    bounded by the rebalance timeout, max(30 s, 3 x session)), and on an idle group it takes a
    few heartbeats. 20 heartbeat intervals leaves room
    for a CI machine at load average 25 (18 s was seen to fall short there once)."""
    timeout = SESSION_TIMEOUT_MS / 1000 + 20 * HEARTBEAT_INTERVAL_MS / 1000
    try:
        await eventually(lambda: all(r.running and assignment(r) for r in routers), timeout)
    except pytest.fail.Exception:
        states = router_states(routers)
        pytest.fail(f"timed out after {timeout}s waiting for every router to hold partitions:\n{states}")


def router_states(routers: list[Role]) -> str:
    """What each router was doing, for a failure message: alive or not, its last assignment,
    and its last consumer-group events."""
    lines = []
    for r in routers:
        state = "running" if r.running else f"exited {r.proc.returncode if r.proc else '-'}"
        group = [line[:170] for line in r.log().splitlines() if "event=kafka." in line or "joined group" in line]
        lines.append(f"  {r.name}: {state}; partitions={assignment(r) or 'none'}; last: {' | '.join(group[-3:])}")
    return "\n".join(lines)


async def test_router_killed_during_a_rebalance(tmp_path: Path):
    """kill -9 of the group's leader while a rebalance waits on it. A member that has sent its
    JoinGroup is never expired by its session timeout: the group waits for it until the
    rebalance timeout, and in an eager rebalance no router consumes meanwhile. A third router
    joining starts the rebalance; the other router is frozen (SIGSTOP) meanwhile, so the
    rebalance is still waiting when the leader has rejoined and is killed."""

    async def kill_leader_mid_rebalance(deployment, api, routers, edges, fleet, tally):
        leader = group_leader(routers)
        other = routers[1 - leader]
        joins = routers[leader].log().count("(Re-)joining group")
        other.send_signal(signal.SIGSTOP)
        try:
            newcomer = asyncio.create_task(deployment.router(metrics=True))
            await eventually(
                lambda: routers[leader].log().count("(Re-)joining group") > joins,
                30,
                what="the leader to rejoin for the rebalance",
            )
            await routers[leader].kill()
        finally:
            other.send_signal(signal.SIGCONT)
        await newcomer

    deployment = shared_deployment(tmp_path)
    try:
        await run_fault("kill -9 router mid-rebalance", deployment, kill_leader_mid_rebalance)
    finally:
        await deployment.stop()


@pytest.mark.parametrize("run", range(KILL_EDGE_RUNS))
async def test_edge_killed(tmp_path: Path, run: int):
    moved: dict[str, list[str]] = {}

    async def kill_edge(deployment, api, routers, edges, fleet, tally):
        moved["from"] = fleet.on_edge(deployment.edge_id(edges[0].name))
        await edges[0].kill()

    deployment = shared_deployment(tmp_path)
    try:
        fleet, edges, _ = await run_fault(f"kill -9 edge (run {run + 1}/{KILL_EDGE_RUNS})", deployment, kill_edge)
        survivor = deployment.edge_id(edges[1].name)
        assert moved["from"], "some devices were on the killed edge"
        assert all(fleet.clients[name].edge_id == survivor for name in moved["from"]), "they moved to the other"
    finally:
        await deployment.stop()


async def test_kafka_stopped_then_started(tmp_path: Path):
    """While the broker is down Sends answer UNAVAILABLE; once it is back they are accepted again
    (kafka-python's idempotent producer, stuck after batches expired during the outage, is
    replaced), and every accepted message arrives."""
    back: dict[str, float] = {}

    async with service("kafka", tmp_path / "kafka", timeout=180) as kafka:

        async def stop_kafka(deployment, api, routers, edges, fleet, tally):
            assert await kafka.stop() == 0
            # Down until Sends answer UNAVAILABLE (each within --kafka-publish-timeout-seconds).
            await eventually(lambda: len(tally.unavailable) >= 10, 30, what="Sends to answer UNAVAILABLE")
            await kafka.restart()  # returns once the broker serves again
            back["at"] = time.monotonic()

        async def traffic_once_back(sender, fleet, tally):
            await traffic(sender, fleet, AFTER_KAFKA_SECONDS, tally=tally, tag="back")

        deployment = shared_deployment(tmp_path, kafka_url=kafka.env["PUSHPLAT_TEST_KAFKA_URL"])
        try:
            _, _, tally = await run_fault(
                "Kafka stopped, then started",
                deployment,
                stop_kafka,
                # The 120 sent before the broker stops, and those once it is back.
                min_accepted=FAULT_AT * 30 + (AFTER_KAFKA_SECONDS - KAFKA_RECOVERY_SECONDS) * 30,
                after_fault=traffic_once_back,
                api_args=("--kafka-publish-timeout-seconds", str(KAFKA_PUBLISH_TIMEOUT)),
            )
            assert tally.unavailable, "Sends answered UNAVAILABLE while Kafka was down"
            after = sorted((tally.sent_at[p], p) for p in tally.sent_at if p.startswith("back"))
            accepted = [t - back["at"] for t, p in after if p in tally.accepted]
            refused = [t - back["at"] for t, p in after if p in tally.unavailable]
            print(
                f"  once Kafka was back: {len(accepted)} accepted (the first sent {min(accepted, default=-1):.1f}s "
                f"after), {len(refused)} UNAVAILABLE (the last sent {max(refused, default=0):.1f}s after)",
                flush=True,
            )
            assert accepted, "no Send was accepted once Kafka was back"
            late = [t for t in refused if t > KAFKA_RECOVERY_SECONDS]
            assert not late, (
                f"{len(late)} Sends answered UNAVAILABLE more than {KAFKA_RECOVERY_SECONDS}s after Kafka was back"
            )
            assert "event=kafka.producer_reset" in deployment.roles[0].log(), "the api logged its producer reset"
        finally:
            await deployment.stop()


async def test_redis_restarted_without_persistence(tmp_path: Path):
    async with service("redis", tmp_path / "redis") as redis:

        async def restart_redis(deployment, api, routers, edges, fleet, tally):
            await redis.restart()

        deployment = shared_deployment(tmp_path, redis_url=redis.env["PUSHPLAT_TEST_REDIS_URL"])
        try:
            # To device ids: a message to a user routed in the second before the edges noticed
            # the loss finds none of the user's devices (the store forgot them; see the README).
            await run_fault("Redis restarted without persistence", deployment, restart_redis, to_users=False)
        finally:
            await deployment.stop()


async def test_redis_cluster_master_killed(tmp_path: Path):
    async with service("redis-cluster", tmp_path / "cluster", timeout=120) as cluster:
        url = cluster.env["PUSHPLAT_TEST_REDIS_CLUSTER_URL"]
        deployment = shared_deployment(tmp_path, redis_url=url)

        async def kill_master(deployment, api, routers, edges, fleet, tally):
            # The master that holds d0's registry entry (and inbox: same hash tag).
            registry = RedisRegistry.from_url(deployment.registry)
            try:
                assert isinstance(registry.client, RedisCluster)
                await registry.client.initialize()
                node = registry.client.get_node_from_key(registry.device_key("d0"))
            finally:
                await registry.close()
            pid = int((tmp_path / "cluster" / "redis-cluster" / str(node.port) / "redis.pid").read_text())
            os.kill(pid, signal.SIGKILL)

        try:
            await run_fault(
                "kill -9 Redis Cluster master",
                deployment,
                kill_master,
                router_args=("--inbox-wait-replicas", "1"),
                edge_args=("--registry-ttl-seconds", "30"),
            )
        finally:
            await deployment.stop()
