"""RedisInbox against a real redis-server and a real Redis Cluster (3 masters + 3 replicas).

The services, and the fixtures shared with the other Redis store tests, are in conftest.py.
Every behaviour test runs on both deployments, on a fresh key prefix.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY
from pushplat_client.v1 import message_pb2
from redis.asyncio.cluster import RedisCluster

from pushplat.inbox import InboxUnavailable, open_inbox
from pushplat.inbox.memory import MemoryInbox
from pushplat.inbox.redis import TTL_SLACK_MS, RedisInbox
from pushplat.messages import now_ms
from tests.helpers import eventually

LONG_TTL_MS = 60_000


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("pushplat_messages_dropped_total", {"reason": reason}) or 0.0


def msg(
    message_id: str, collapse_key: str = "", ttl_ms: int = LONG_TTL_MS, payload: bytes = b""
) -> message_pb2.Message:
    created = now_ms()
    return message_pb2.Message(
        message_id=message_id,
        payload=payload or message_id.encode(),
        created_at_ms=created,
        expires_at_ms=created + ttl_ms if ttl_ms else 0,
        collapse_key=collapse_key,
        requires_ack=True,
        labels={"campaign": "c1"},
    )


async def pending_ids(inbox: RedisInbox, device_id: str, limit: int = 1000) -> list[str]:
    return [m.message_id for m in await inbox.pending(device_id, limit)]


@pytest.fixture
async def inbox(deployment: str, redis_store: Callable) -> AsyncIterator[RedisInbox]:
    async with redis_store(RedisInbox, deployment) as store:
        yield store


# -- behaviour, on standalone and cluster --------------------------------------------------------


async def test_put_and_pending_oldest_first(inbox: RedisInbox) -> None:
    sent = [msg(f"m{i}", payload=bytes([0, 255, i])) for i in range(5)]  # binary payloads survive
    for m in sent:
        assert await inbox.put(["phone"], m) == []
    got = await inbox.pending("phone")
    assert got == sent
    assert await pending_ids(inbox, "phone", limit=2) == ["m0", "m1"]
    assert await inbox.pending("phone", limit=0) == []
    assert await inbox.size("phone") == 5
    assert await inbox.pending("tablet") == [] and await inbox.size("tablet") == 0
    assert await inbox.put([], msg("nobody")) == []

    # A re-put (a retried route) keeps the message's place and stores it once.
    assert await inbox.put(["phone"], sent[1]) == []
    assert await pending_ids(inbox, "phone") == ["m0", "m1", "m2", "m3", "m4"]
    # Never-expiring messages are kept too (and their keys still get a TTL).
    await inbox.put(["phone"], msg("forever", ttl_ms=0))
    assert (await inbox.pending("phone"))[-1].expires_at_ms == 0
    for key in inbox.device_keys("phone")[:2]:
        assert await inbox.client.pttl(key) > 0


async def test_collapse_replaces_the_older_message(inbox: RedisInbox) -> None:
    await inbox.put(["phone", "tablet"], msg("score-1", collapse_key="score"))
    await inbox.put(["phone"], msg("news", collapse_key="news"))
    await inbox.put(["phone"], msg("plain"))

    assert await inbox.put(["phone", "tablet"], msg("score-2", collapse_key="score")) == ["score-1", "score-1"]
    assert await pending_ids(inbox, "phone") == ["news", "plain", "score-2"], "the newer one goes to the end"
    assert await pending_ids(inbox, "tablet") == ["score-2"]
    # Re-putting the current holder collapses nothing; other keys are independent.
    assert await inbox.put(["phone"], msg("score-2", collapse_key="score")) == []
    assert await inbox.put(["laptop"], msg("score-3", collapse_key="score")) == []
    assert await inbox.put(["phone"], msg("score-3", collapse_key="score")) == ["score-2"]
    assert await pending_ids(inbox, "phone") == ["news", "plain", "score-3"]

    # Once the holder is acked, a newer message with its key has nothing to replace.
    assert await inbox.ack("phone", ["score-3"]) == ["score-3"]
    assert await inbox.put(["phone"], msg("score-4", collapse_key="score")) == []
    assert await pending_ids(inbox, "phone") == ["news", "plain", "score-4"]


async def test_ack_removes_and_is_idempotent(inbox: RedisInbox) -> None:
    for i in range(4):
        await inbox.put(["phone", "tablet"], msg(f"m{i}", collapse_key=f"k{i}"))
    assert await inbox.ack("phone", ["m1", "m3", "unknown"]) == ["m1", "m3"], "only what was there"
    assert await inbox.ack("phone", ["m1", "m3"]) == [], "a repeated ack finds nothing"
    assert await inbox.ack("phone", []) == []
    assert await inbox.ack("nobody", ["m0"]) == []
    assert await pending_ids(inbox, "phone") == ["m0", "m2"]
    assert await pending_ids(inbox, "tablet") == ["m0", "m1", "m2", "m3"], "an ack is per device"
    # The acked messages' collapse entries went with them.
    collapse = await inbox.client.hgetall(inbox.device_keys("phone")[3])
    assert collapse == {b"k:k0": b"m0", b"i:m0": b"k0", b"k:k2": b"m2", b"i:m2": b"k2"}

    assert await inbox.ack("phone", ["m0", "m2"]) == ["m0", "m2"]
    assert await inbox.pending("phone") == []
    assert await inbox.client.exists(*inbox.device_keys("phone")) == 0, "an empty inbox leaves no keys"


async def test_expired_messages_are_dropped_and_removed(inbox: RedisInbox) -> None:
    await inbox.put(["phone"], msg("short-1", collapse_key="k", ttl_ms=300))
    await inbox.put(["phone"], msg("long"))
    await inbox.put(["phone"], msg("short-2", ttl_ms=300))
    assert await pending_ids(inbox, "phone") == ["short-1", "long", "short-2"]
    before = dropped("expired")

    async def only_long_left() -> bool:
        return await pending_ids(inbox, "phone") == ["long"]

    started = time.monotonic()
    await eventually(only_long_left, timeout=5, what="messages with a 0.3 s ttl to expire")
    assert time.monotonic() - started < 3
    assert dropped("expired") - before == 2
    z, m, x, c = inbox.device_keys("phone")
    assert await inbox.client.zrange(z, 0, -1) == [b"long"]
    assert await inbox.client.hkeys(m) == [b"long"]
    assert await inbox.client.zrange(x, 0, -1) == [b"long"]
    assert await inbox.client.exists(c) == 0, "the expired message's collapse entry is gone too"
    assert await inbox.size("phone") == 1
    assert await inbox.put(["phone"], msg("new", collapse_key="k")) == [], "nothing left to collapse"


async def test_every_key_expires_with_the_last_message(inbox: RedisInbox) -> None:
    await inbox.put(["phone"], msg("short", collapse_key="k", ttl_ms=2_000))
    keys = inbox.device_keys("phone")
    ttls = [await inbox.client.pttl(key) for key in keys]
    assert all(0 < t <= 2_000 + TTL_SLACK_MS for t in ttls), ttls
    # A longer-lived message extends every key; a shorter one never shortens them.
    await inbox.put(["phone"], msg("long", collapse_key="k2", ttl_ms=LONG_TTL_MS * 10))
    await inbox.put(["phone"], msg("short-again", ttl_ms=1_000))
    ttls = [await inbox.client.pttl(key) for key in keys]
    assert all(LONG_TTL_MS * 10 - 5_000 < t <= LONG_TTL_MS * 10 + TTL_SLACK_MS for t in ttls), ttls


async def test_a_full_inbox_drops_its_oldest_messages(deployment: str, redis_store: Callable) -> None:
    async with redis_store(RedisInbox, deployment, "inbox_max=5") as inbox:
        assert inbox.max_per_device == 5
        before = dropped("inbox_full")
        for i in range(8):
            await inbox.put(["phone"], msg(f"m{i}", collapse_key=f"k{i}"))
        assert await pending_ids(inbox, "phone") == [f"m{i}" for i in range(3, 8)]
        assert await inbox.size("phone") == 5
        assert dropped("inbox_full") - before == 3
        # Trimmed messages take their collapse entries with them.
        collapse = await inbox.client.hgetall(inbox.device_keys("phone")[3])
        assert sorted(collapse) == sorted(
            [f"k:k{i}".encode() for i in range(3, 8)] + [f"i:m{i}".encode() for i in range(3, 8)]
        )
        assert await inbox.put(["phone"], msg("again-k0", collapse_key="k0")) == []


async def test_put_to_many_devices(inbox: RedisInbox) -> None:
    devices = [f"dev-{i}" for i in range(300)]  # spread over every node of a cluster
    await inbox.put(devices, msg("first", collapse_key="k"))
    await inbox.put(devices[::3], msg("other"))
    # More concurrent calls than the cluster client has connections per node.
    replaced = await asyncio.gather(*(inbox.put([d], msg(f"second-{d}", collapse_key="k")) for d in devices))
    assert replaced == [["first"]] * len(devices)
    for i, device in enumerate(devices):
        expected = (["other"] if i % 3 == 0 else []) + [f"second-{device}"]
        assert await pending_ids(inbox, device) == expected
    # Duplicate targets count once; replaced ids come in device order.
    third = await inbox.put(devices + devices[:10], msg("third", collapse_key="k"))
    assert third == [f"second-{d}" for d in devices]


async def test_enroll_and_devices_of(inbox: RedisInbox) -> None:
    await inbox.enroll("kim", "phone", 60)
    await inbox.enroll("kim", "tv", 0.3)
    await inbox.enroll("kim", "phone", 60)  # refreshed on every connect: still one entry
    await inbox.enroll("lee", "tablet", 60)
    found = await inbox.devices_of(["kim", "lee", "nobody", "kim"])
    assert {u: sorted(d) for u, d in found.items()} == {"kim": ["phone", "tv"], "lee": ["tablet"], "nobody": []}
    assert await inbox.devices_of([]) == {}
    assert 0 < await inbox.client.pttl(inbox.user_key("kim")) <= 60_000 + TTL_SLACK_MS

    async def tv_forgotten() -> bool:
        return await inbox.devices_of(["kim"]) == {"kim": ["phone"]}

    await eventually(tv_forgotten, timeout=5, what="an enrollment with a 0.3 s ttl to lapse")
    assert await inbox.client.zrange(inbox.user_key("kim"), 0, -1) == [b"phone"], "the lapsed member is removed"
    # A later enrollment of the same device brings it back; a shorter one never shortens it.
    await inbox.enroll("kim", "tv", 60)
    await inbox.enroll("kim", "tv", 0.01)
    # A shortened entry would show in the stored expiry at once (no waiting for a 10 ms TTL to
    # lapse): the user's list still holds the device for about 60 s.
    expires = await inbox.client.zscore(inbox.user_key("kim"), "tv")
    assert expires is not None and expires - inbox._now_ms() > 50_000
    assert sorted((await inbox.devices_of(["kim"]))["kim"]) == ["phone", "tv"]


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_a_device_belongs_to_its_first_user_until_forgotten(inbox: RedisInbox, backend: str) -> None:
    store = inbox if backend == "redis" else MemoryInbox()
    assert await store.enroll("alice", "alice-phone", 60) is None
    assert await store.enroll("alice", "alice-phone", 60) is None, "its own user refreshes the binding"
    # Another user is refused and changes nothing: not the binding, not their device list.
    assert await store.enroll("mallory", "alice-phone", 60) == "alice"
    assert await store.devices_of(["mallory", "alice"]) == {"mallory": [], "alice": ["alice-phone"]}
    assert await store.enroll("alice", "alice-phone", 60) is None
    # Once the binding lapses (no connect for the memory window), the id is free again.
    assert await store.enroll("bob", "old-tablet", 0.2) is None
    assert await store.enroll("carol", "old-tablet", 60) == "bob"

    async def free() -> bool:
        return await store.enroll("carol", "old-tablet", 60) is None

    await eventually(free, timeout=5, what="a 0.2 s binding to lapse")
    assert await store.enroll("bob", "old-tablet", 60) == "carol"
    assert await store.devices_of(["bob", "carol"]) == {"bob": [], "carol": ["old-tablet"]}
    if backend == "redis":
        assert await inbox.client.get(inbox.owner_key("alice-phone")) == b"alice"
        assert inbox.owner_key("alice-phone").startswith(inbox.device_keys("alice-phone")[0].rsplit(":", 1)[0])


async def test_ids_with_special_characters(inbox: RedisInbox, weird_ids: list[str]) -> None:
    for i, device in enumerate(weird_ids):
        await inbox.put([device], msg(f"only-{i}", collapse_key="k"))
    await inbox.put(weird_ids, msg("all", collapse_key="k"))
    for device in weird_ids:
        assert await pending_ids(inbox, device) == ["all"], f"inbox of {device!r} mixed with another"
    for i, user in enumerate(weird_ids):
        await inbox.enroll(user, f"device-{i}", 60)
    assert await inbox.devices_of(weird_ids) == {user: [f"device-{i}"] for i, user in enumerate(weird_ids)}
    assert [await inbox.ack(d, ["all"]) for d in weird_ids] == [["all"]] * len(weird_ids)


async def test_survives_loss_of_the_script_cache(inbox: RedisInbox) -> None:
    await inbox.put(["phone"], msg("m1", collapse_key="k"))
    await inbox.client.script_flush()
    assert await inbox.put(["phone", "tablet"], msg("m2", collapse_key="k")) == ["m1"]
    await inbox.client.script_flush()
    assert await pending_ids(inbox, "phone") == ["m2"]
    await inbox.client.script_flush()
    assert await inbox.ack("phone", ["m2"]) == ["m2"]
    await inbox.client.script_flush()
    await inbox.enroll("kim", "phone", 60)
    assert await inbox.devices_of(["kim"]) == {"kim": ["phone"]}


@pytest.mark.parametrize("seed", range(3))
async def test_behaves_like_the_memory_inbox(inbox: RedisInbox, seed: int) -> None:
    """Random puts (with collapse keys), acks and reads give the reference inbox's answers."""
    rng = random.Random(seed)
    reference = MemoryInbox(max_per_device=6)
    inbox.max_per_device = 6
    devices = ["a", "b", "c"]
    sent: list[str] = []
    for step in range(150):
        action = rng.random()
        if action < 0.55:
            targets = rng.sample(devices, rng.randint(1, 3))
            m = msg(f"s{seed}-{step}", collapse_key=rng.choice(["", "", "x", "y"]))
            sent.append(m.message_id)
            assert await inbox.put(targets, m) == await reference.put(targets, m), step
        elif action < 0.85 and sent:
            device, ids = rng.choice(devices), rng.sample(sent, min(len(sent), rng.randint(1, 4)))
            assert await inbox.ack(device, ids) == await reference.ack(device, ids), step
        else:
            device, limit = rng.choice(devices), rng.randint(1, 8)
            assert await inbox.pending(device, limit) == await reference.pending(device, limit), step
    for device in devices:
        assert await inbox.pending(device) == await reference.pending(device)


# -- cluster specifics ---------------------------------------------------------------------------


@pytest.mark.cluster
async def test_cluster_keys_of_a_device_share_one_slot(redis_store: Callable, weird_ids: list[str]) -> None:
    async with redis_store(RedisInbox, "cluster") as inbox:
        client = inbox.client
        assert isinstance(client, RedisCluster)
        slots = set()
        for device in [*weird_ids, "phone", "dev-42"]:
            keys = inbox.device_keys(device)
            device_slots = {await client.execute_command("CLUSTER KEYSLOT", key) for key in keys}
            assert len(device_slots) == 1, f"keys of {device!r} span slots: {keys}"
            slots |= device_slots
        assert len(slots) > 3, "different devices spread over the cluster"
        # Ordinary ids stay readable: the slot is the id's own hash tag.
        assert inbox.device_keys("phone")[0] == f"{inbox.prefix}:ib:{{phone}}:z"
        assert await client.execute_command("CLUSTER KEYSLOT", "{phone}") in slots


# -- configuration and unreachable servers (no service needed) ------------------------------------


def test_open_inbox_and_url_options() -> None:
    inbox = open_inbox("redis://127.0.0.1:1/0?prefix=abc&inbox_max=7&status_ttl=5")
    assert isinstance(inbox, RedisInbox)
    assert inbox.prefix == "abc" and inbox.max_per_device == 7
    assert RedisInbox.from_url("redis://127.0.0.1:1/0").max_per_device == 10_000
    assert inbox.device_keys("d") == ("abc:ib:{d}:z", "abc:ib:{d}:m", "abc:ib:{d}:x", "abc:ib:{d}:c")
    assert inbox.user_key("u") == "abc:udev:{u}"
    assert isinstance(open_inbox("redis+cluster://127.0.0.1:1,127.0.0.1:2").client, RedisCluster)
    with pytest.raises(ValueError, match="prefix"):
        RedisInbox.from_url("redis://127.0.0.1:1?prefix=a{b}")
    with pytest.raises(ValueError, match="inbox URL"):
        RedisInbox.from_url("redis+cluster://127.0.0.1:1/3")
    with pytest.raises(ValueError, match="at least 1"):
        RedisInbox.from_url("redis://127.0.0.1:1?inbox_max=0")
    assert "hunter2" not in RedisInbox.from_url("redis://u:hunter2@127.0.0.1:1/0").url


async def test_unreachable_server_is_inbox_unavailable(unreachable_redis) -> None:
    async with unreachable_redis.store(RedisInbox) as inbox:
        for call in (
            lambda: inbox.ping(),
            lambda: inbox.put(["d"], msg("m")),
            lambda: inbox.ack("d", ["m"]),
            lambda: inbox.pending("d"),
            lambda: inbox.size("d"),
            lambda: inbox.enroll("u", "d", 1),
            lambda: inbox.devices_of(["u"]),
        ):
            await unreachable_redis.assert_unavailable_fast(call, InboxUnavailable)
