"""The subscription store on memory, a real Redis and a real Redis Cluster: per-device topics with
a cap, a version per change, a snapshot, and the device-memory TTL after which they are gone."""

from __future__ import annotations

import pytest

from pushplat.topics import Change, open_subscriptions
from tests.helpers import eventually


@pytest.fixture
async def store(registry_url):
    subscriptions = open_subscriptions(registry_url)
    yield subscriptions
    await subscriptions.close()


async def test_changes_apply_per_device_with_a_cap_and_a_version(store):
    [first] = await store.change_many([Change("d1", ["a", "b", "c"])], max_topics=2, ttl_seconds=60, snapshot=True)
    assert (first.subscribed, first.full, first.count, first.topics) == (["a", "b"], ["c"], 2, ["a", "b"])
    second, other = await store.change_many(
        [Change("d1", ["a"], ["b"]), Change("d2", ["z"])], max_topics=2, ttl_seconds=60
    )
    assert second.subscribed == ["a"] and second.unsubscribed == ["b"] and second.count == 1
    # Versions only order a device's changes: a batch that Redis Cluster re-runs after NOSCRIPT
    # on one node counts a change twice, which keeps the order.
    assert second.version > first.version and second.topics is None
    assert other.subscribed == ["z"] and other.version >= 1
    snapshot = await store.get("d1")
    assert snapshot.topics == ["a"] and snapshot.version == second.version
    assert (await store.get("nobody")).topics == []
    await store.forget("d1")
    assert (await store.get("d1")).topics == []


async def test_subscriptions_are_forgotten_with_the_device_memory(store):
    await store.change(Change("short", ["t"]), max_topics=10, ttl_seconds=0.3)
    await store.change(Change("kept", ["t"]), max_topics=10, ttl_seconds=0.3)
    await store.get("kept", touch_ttl_seconds=60)  # a connect refreshes the window

    async def gone() -> bool:
        return (await store.get("short")).topics == []

    await eventually(gone, 5, what="the short-lived device's topics expired")
    assert (await store.get("kept")).topics == ["t"]


async def test_redis_keys_are_one_slot_per_device(redis_url):
    from pushplat.topics.redis import RedisSubscriptions

    store = RedisSubscriptions.from_url(redis_url)
    try:
        assert store.key("dev{1}").endswith(":topics:{dev%7B1%7D}")
        # A device whose id has braces still gets a one-key script (no CROSSSLOT in a cluster).
        changed = await store.change(Change("dev{1}", ["x"]), max_topics=5, ttl_seconds=60)
        assert changed.subscribed == ["x"]
    finally:
        await store.close()
