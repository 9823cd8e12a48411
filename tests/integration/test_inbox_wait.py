"""--inbox-wait-replicas on a real Redis Cluster (3 masters, 1 replica each) and a real standalone
Redis (no replica): each put_many ends with a WAIT on every master it wrote to, on the connection
that wrote, and a WAIT that fewer replicas answered in time is counted, not an error."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import message_pb2
from redis.asyncio.cluster import RedisCluster

from pushplat.inbox.redis import RedisInbox
from tests.helpers import REDIS_URL_ENV, delete_prefix, require_env, with_prefix


def short_waits() -> float:
    return REGISTRY.get_sample_value("pushplat_inbox_wait_short_total") or 0.0


async def wait_calls(store: RedisInbox) -> dict[str, int]:
    """WAIT calls served so far, per master."""
    client = store.client
    if isinstance(client, RedisCluster):
        infos = await client.execute_command("INFO", "commandstats", target_nodes=RedisCluster.PRIMARIES)
    else:
        infos = {"standalone": await client.execute_command("INFO", "commandstats")}
    return {node: int(info.get("cmdstat_wait", {}).get("calls", 0)) for node, info in infos.items()}


def opener(replicas: int, timeout_ms: int):
    return lambda url: RedisInbox.from_url(url, wait_replicas=replicas, wait_timeout_ms=timeout_ms)


def messages(n: int) -> list[tuple[list[str], message_pb2.Message]]:
    return [([f"dev-{i}"], message_pb2.Message(message_id=f"m{i}", payload=b"x", requires_ack=True)) for i in range(n)]


@pytest.mark.cluster
async def test_cluster_waits_once_per_master_written_to(redis_store):
    async with redis_store(opener(1, 2000), "cluster") as store:
        await store.put_many(messages(30))  # caches the script on every master (else: NOSCRIPT, a re-run)
        before, short = await wait_calls(store), short_waits()
        await store.put_many(messages(30))  # 30 devices: keys on every master
        after = await wait_calls(store)
        assert {node: after[node] - before[node] for node in after} == dict.fromkeys(after, 1)
        assert short_waits() == short, "each master's replica acknowledged in time"
        assert [m.message_id for m in await store.pending("dev-7")] == ["m7"]


@pytest.mark.cluster
async def test_cluster_wait_for_more_replicas_than_exist_is_counted_and_bounded(redis_store):
    async with redis_store(opener(2, 100), "cluster") as store:
        short = short_waits()
        started = time.monotonic()
        await store.put_many(messages(30))
        took = time.monotonic() - started
        assert short_waits() == short + 3, "one short WAIT per master"
        assert 0.1 <= took < 2, f"bounded by the timeout (WAITs run in parallel per master): {took:.2f}s"
        assert await store.size("dev-1") == 1, "the write itself stands"


@pytest.mark.redis
async def test_standalone_without_replicas_counts_a_short_wait(redis_store):
    async with redis_store(opener(1, 50), "standalone") as store:
        await store.put_many(messages(3))
        before, short = await wait_calls(store), short_waits()
        await store.put_many(messages(3))
        after = await wait_calls(store)
        assert after["standalone"] - before["standalone"] == 1, "one WAIT for the whole pipeline"
        assert short_waits() == short + 1
        assert await store.size("dev-2") == 1


@pytest.mark.cluster
async def test_a_fresh_cluster_client_can_wait_on_its_first_write():
    # The first command of a cluster client loads the slot map; the WAITs need it before.
    store = opener(1, 2000)(with_prefix(require_env(REDIS_URL_ENV["cluster"]), f"t{time.monotonic_ns()}"))
    try:
        await store.put_many(messages(3))
        assert await store.size("dev-0") == 1
    finally:
        await delete_prefix(store)
        await store.close()
