"""Registry self-healing on real Redis and a real Redis Cluster: when the store loses an edge's
entries (a restart without persistence, FLUSHALL, a failover to a replica that lagged), the
edge re-creates them (device key, user index, edge address, inbox enrollment) and replays what
was routed to the inbox meanwhile. (The same with a real Redis restart and separate processes
is tests/faults/test_faults.py::test_redis_restarted_without_persistence.)"""

from __future__ import annotations

import time

from prometheus_client import REGISTRY
from pushplat_client import PushClient, PushSender

from pushplat.inbox.redis import RedisInbox
from pushplat.registry.redis import RedisRegistry
from tests.helpers import Inbox, eventually


async def lose_everything(registry: RedisRegistry, edge_id: str) -> None:
    """Delete every key of the platform, the edge's own entry last: the edge must not see it gone
    (and heal) while the rest is still being deleted."""
    keys = [key async for key in registry.client.scan_iter(match=f"{registry.prefix}:*", count=1000)]
    edge_key = registry.edge_key(edge_id)
    for key in sorted(keys, key=lambda k: k == edge_key):
        await registry.client.delete(key)


def healed_count() -> float:
    return REGISTRY.get_sample_value("pushplat_registry_healed_total") or 0.0


async def connected_device(platform, inbox: Inbox) -> PushClient:
    client = PushClient(f"127.0.0.1:{platform.ports.edge}", user_id="u1", device_id="d1")
    await inbox.connect("d1", client, timeout=10)
    return client


async def test_after_the_store_lost_everything_the_edge_heals_within_seconds(start_platform, redis_url):
    # Refreshes every 20 s (ttl/3); the edge checks for its own entry every second.
    platform = await start_platform(registry=redis_url, registry_ttl_seconds=60, registry_check_seconds=1)
    registry, inbox_store = RedisRegistry.from_url(redis_url), RedisInbox.from_url(redis_url)
    inbox = Inbox()
    client = await connected_device(platform, inbox)
    try:
        async with PushSender(f"127.0.0.1:{platform.ports.api}") as sender:
            await sender.send(device_id="d1", payload="before", at_least_once=True)
            await eventually(lambda: inbox.seen["d1"] == ["before"], 10, what="the first message")
            healed = healed_count()

            await lose_everything(registry, platform.config.edge_id)
            lost_at = time.monotonic()
            # Routed while the entries are missing: no route, so they wait in the inbox.
            for i in range(5):
                await sender.send(device_id="d1", payload=f"during-{i}", at_least_once=True)

            async def entries_back() -> bool:
                return (
                    "d1" in await registry.lookup_devices(["d1"])
                    and [r.device_id for r in (await registry.lookup_users(["u1"])).get("u1", [])] == ["d1"]
                    and platform.config.edge_id in await registry.edge_addresses([platform.config.edge_id])
                    and (await inbox_store.devices_of(["u1"]))["u1"] == ["d1"]
                )

            await eventually(entries_back, 10, what="the device's entries to be re-created")
            took = time.monotonic() - lost_at
            assert took < 5, f"healed after {took:.1f}s: the check runs every second, the refresh every 20 s"
            assert healed_count() == healed + 1
            await eventually(
                lambda: sorted(inbox.seen["d1"]) == ["before", *(f"during-{i}" for i in range(5))],
                10,
                what="the messages routed while the entries were missing",
            )
            # The enrollment is back too: a message to the user finds the device.
            await sender.send(user_id="u1", payload="to the user", at_least_once=True)
            await eventually(lambda: inbox.seen["d1"][-1:] == ["to the user"], 10, what="a message to the user")
            assert len(inbox.seen["d1"]) == 7, "no duplicates at the app"
    finally:
        await inbox.close()
        await client.close()
        await registry.close()
        await inbox_store.close()


async def test_entries_lost_behind_the_edges_back_come_back_at_the_next_refresh(start_platform, redis_url):
    # As when a cluster shard fails over to a replica that lagged: the device's keys are gone
    # but the edge's own entry (on another shard) is not, so the check sees nothing amiss.
    platform = await start_platform(registry=redis_url, registry_ttl_seconds=3, registry_check_seconds=0)
    registry = RedisRegistry.from_url(redis_url)
    inbox = Inbox()
    client = await connected_device(platform, inbox)
    try:
        async with PushSender(f"127.0.0.1:{platform.ports.api}") as sender:
            healed = healed_count()
            # (One key at a time: in a cluster the two live in different slots.)
            for key in (registry.device_key("d1"), registry.user_key("u1")):
                await registry.client.delete(key)
            await sender.send(device_id="d1", payload="while missing", at_least_once=True)
            await eventually(
                lambda: inbox.seen["d1"] == ["while missing"], 10, what="the message, after the refresh (every 1 s)"
            )
            assert [r.device_id for r in (await registry.lookup_users(["u1"]))["u1"]] == ["d1"]
            assert healed_count() == healed + 1
    finally:
        await inbox.close()
        await client.close()
        await registry.close()
