"""RedisRegistry against a real redis-server and a real Redis Cluster (3 masters + 3 replicas).

The services, and the fixtures shared with the other Redis store tests, are in conftest.py.
The same behaviour tests run on both deployments. The failover test kill -9's a master, so it
starts its OWN cluster in a temp dir and never touches the shared one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import pushplat.registry.redis as redis_backend
from pushplat.registry import DeviceOwned, RegistryUnavailable, Route, open_registry
from pushplat.registry.memory import MemoryRegistry
from pushplat.registry.redis import RedisRegistry
from tests.helpers import eventually, require_env, with_prefix

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "scripts" / "services" / "redis-cluster.sh"
CLUSTER_ENV = "PUSHPLAT_TEST_REDIS_CLUSTER_URL"
LONG_TTL = 60.0  # long enough never to expire during a test
FAILOVER_BOUND_S = 30.0


def route(device: str, user: str, session: str, edge: str = "edge-1") -> Route:
    return Route(device_id=device, user_id=user, edge_id=edge, session_id=session)


def by_device(routes: list[Route]) -> dict[str, Route]:
    return {r.device_id: r for r in routes}


@pytest.fixture
async def registry(deployment: str, redis_store: Callable) -> AsyncIterator[RedisRegistry]:
    """A registry on a fresh key prefix, so tests never see each other's keys."""
    async with redis_store(open_registry, deployment) as reg:
        assert isinstance(reg, RedisRegistry)
        yield reg


# -- behaviour, on standalone and cluster --------------------------------------------------------


async def test_register_and_lookup_by_device_and_user(registry: RedisRegistry) -> None:
    phone, tablet = route("phone", "alice", "s1", "edge-1"), route("tablet", "alice", "s2", "edge-2")
    laptop = route("laptop", "alice", "s3", "edge-1")
    other = route("bob-phone", "bob", "s4", "edge-2")
    for r in (phone, tablet, laptop, other):
        await registry.register(r, LONG_TTL)

    found = await registry.lookup_devices(["phone", "tablet", "laptop", "bob-phone", "nobody", "phone"])
    assert found == {"phone": phone, "tablet": tablet, "laptop": laptop, "bob-phone": other}

    users = await registry.lookup_users(["alice", "bob", "carol", "alice"])
    assert set(users) == {"alice", "bob"}
    assert by_device(users["alice"]) == {"phone": phone, "tablet": tablet, "laptop": laptop}
    assert users["bob"] == [other]
    assert await registry.lookup_devices([]) == {}
    assert await registry.lookup_users([]) == {}


async def test_newer_session_replaces_older(registry: RedisRegistry) -> None:
    old, new = route("phone", "alice", "old", "edge-1"), route("phone", "alice", "new", "edge-2")
    await registry.register(old, LONG_TTL)
    await registry.register(new, LONG_TTL)

    assert await registry.lookup_devices(["phone"]) == {"phone": new}
    # The index still holds the old session's member until a lookup drops it: the user must
    # see the device once, with the new route.
    assert await registry.lookup_users(["alice"]) == {"alice": [new]}
    members = await registry.client.zrange(registry.user_key("alice"), 0, -1)
    assert len(members) == 1 and "new" in members[0], "the superseded member should have been cleaned up"


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_a_live_device_of_one_user_is_never_taken_by_another(registry: RedisRegistry, backend: str) -> None:
    reg = registry if backend == "redis" else MemoryRegistry()
    alice = route("alice-phone", "alice", "s1", "edge-1")
    await reg.register(alice, LONG_TTL)
    with pytest.raises(DeviceOwned) as info:
        await reg.register(route("alice-phone", "mallory", "s2", "edge-2"), LONG_TTL)
    assert info.value.owner == "alice"
    # Nothing changed: alice's route stands, mallory has no device, alice's session still refreshes.
    assert await reg.lookup_devices(["alice-phone"]) == {"alice-phone": alice}
    assert await reg.lookup_users(["mallory", "alice"]) == {"alice": [alice]}
    assert not await reg.unregister(route("alice-phone", "mallory", "s2", "edge-2"))
    # Alice's own newer session replaces hers as before; once she leaves, the id is free.
    newer = route("alice-phone", "alice", "s3", "edge-2")
    assert await reg.register(newer, LONG_TTL) == alice
    assert await reg.unregister(newer)
    assert await reg.register(route("alice-phone", "bob", "s4"), LONG_TTL) is None


async def test_unregister_is_compare_and_delete(registry: RedisRegistry) -> None:
    old, new = route("phone", "alice", "old", "edge-1"), route("phone", "alice", "new", "edge-2")
    await registry.register(old, LONG_TTL)
    await registry.register(new, LONG_TTL)

    assert await registry.unregister(old) is False, "the old session must not delete the newer entry"
    assert await registry.lookup_devices(["phone"]) == {"phone": new}
    assert await registry.lookup_users(["alice"]) == {"alice": [new]}

    assert await registry.unregister(new) is True
    assert await registry.lookup_devices(["phone"]) == {}
    assert await registry.lookup_users(["alice"]) == {}
    assert await registry.unregister(new) is False, "a second unregister finds nothing to delete"


async def test_unregister_keeps_other_devices_of_the_user(registry: RedisRegistry) -> None:
    phone, tablet = route("phone", "alice", "s1"), route("tablet", "alice", "s2")
    await registry.register(phone, LONG_TTL)
    await registry.register(tablet, LONG_TTL)
    assert await registry.unregister(phone) is True
    assert await registry.lookup_users(["alice"]) == {"alice": [tablet]}


async def test_refresh_extends_only_its_own_session(registry: RedisRegistry) -> None:
    old, new = route("phone", "alice", "old"), route("phone", "alice", "new")
    await registry.register(old, 2.0)
    await registry.register(new, 2.0)
    mine = route("tablet", "alice", "t1")
    await registry.register(mine, 2.0)

    # One batch: a replaced session (old), a live one (mine) and one whose entry the store lost.
    lost = route("laptop", "alice", "l1")
    healed = await registry.refresh([old, mine, lost], 30.0)

    client = registry.client
    assert 0 < await client.pttl(registry.device_key("phone")) <= 2000, "old's refresh extended the new entry"
    assert await registry.lookup_devices(["phone"]) == {"phone": new}, "and did not take the device back"
    assert await client.pttl(registry.device_key("tablet")) > 20_000
    assert healed == [lost], "only the missing entry is re-created, and reported"
    assert await client.pttl(registry.device_key("laptop")) > 20_000
    assert sorted(r.device_id for r in (await registry.lookup_users(["alice"]))["alice"]) == [
        "laptop",
        "phone",
        "tablet",
    ]

    await registry.refresh([new], 30.0)
    assert await client.pttl(registry.device_key("phone")) > 20_000
    assert await registry.lookup_devices(["phone", "tablet"]) == {"phone": new, "tablet": mine}
    await registry.refresh([], 30.0)  # no-op


async def test_refreshed_entry_outlives_unrefreshed_one(registry: RedisRegistry) -> None:
    kept, dropped = route("kept", "alice", "s1"), route("dropped", "alice", "s2")
    await registry.register(kept, 0.4)
    await registry.register(dropped, 0.4)
    await registry.refresh([kept], LONG_TTL)

    async def dropped_gone() -> bool:
        return "dropped" not in await registry.lookup_devices(["dropped"])

    await eventually(dropped_gone, timeout=5, what="the unrefreshed entry to expire")
    assert await registry.lookup_devices(["kept", "dropped"]) == {"kept": kept}
    assert await registry.lookup_users(["alice"]) == {"alice": [kept]}


async def test_entries_expire_after_their_ttl(registry: RedisRegistry) -> None:
    r = route("phone", "alice", "s1")
    await registry.register(r, 0.3)
    await registry.set_edge("edge-1", "10.0.0.1:7000", 0.3)
    assert await registry.lookup_devices(["phone"]) == {"phone": r}
    assert await registry.lookup_users(["alice"]) == {"alice": [r]}
    assert await registry.edge_addresses(["edge-1"]) == {"edge-1": "10.0.0.1:7000"}
    # The user index carries a TTL too, so it goes away even if nobody looks the user up again.
    assert await registry.client.pttl(registry.user_key("alice")) > 0

    async def all_gone() -> bool:
        return (
            await registry.lookup_devices(["phone"]) == {}
            and await registry.lookup_users(["alice"]) == {}
            and await registry.edge_addresses(["edge-1"]) == {}
        )

    started = time.monotonic()
    await eventually(all_gone, timeout=5, what="entries with ttl 0.3 s to expire")
    assert time.monotonic() - started < 3


async def test_stale_index_members_are_cleaned_lazily(registry: RedisRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    # No clock-skew slack, so a member is stale as soon as its score passes.
    monkeypatch.setattr(redis_backend, "INDEX_SLACK_MS", 0)
    await registry.register(route("phone", "alice", "s1"), 0.2)
    live = route("tablet", "alice", "s2")
    await registry.register(live, LONG_TTL)

    async def only_live_member_left() -> bool:
        users = await registry.lookup_users(["alice"])  # the lookup is what cleans up
        members = await registry.client.zrange(registry.user_key("alice"), 0, -1)
        return users == {"alice": [live]} and len(members) == 1 and "s2" in members[0]

    await eventually(only_live_member_left, timeout=5, what="the expired member to be removed from the index")


async def test_edge_addresses_set_get_remove(registry: RedisRegistry) -> None:
    await registry.set_edge("edge-1", "10.0.0.1:7000", LONG_TTL)
    await registry.set_edge("edge-2", "10.0.0.2:7000", LONG_TTL)
    assert await registry.edge_addresses(["edge-1", "edge-2", "edge-3"]) == {
        "edge-1": "10.0.0.1:7000",
        "edge-2": "10.0.0.2:7000",
    }
    await registry.set_edge("edge-1", "10.0.0.9:7000", LONG_TTL)  # moved
    assert await registry.edge_addresses(["edge-1"]) == {"edge-1": "10.0.0.9:7000"}
    await registry.remove_edge("edge-1")
    await registry.remove_edge("edge-never-set")
    assert await registry.edge_addresses(["edge-1", "edge-2"]) == {"edge-2": "10.0.0.2:7000"}
    assert await registry.edge_addresses([]) == {}


async def test_many_targets(registry: RedisRegistry) -> None:
    users = [f"user-{u}" for u in range(100)]
    routes = [
        route(f"dev-{u}-{d}", users[u], f"sess-{u}-{d}", f"edge-{(u + d) % 7}") for u in range(100) for d in range(5)
    ]
    # All at once: more concurrent calls than the cluster client has connections per node.
    await asyncio.gather(*(registry.register(r, LONG_TTL) for r in routes))

    wanted = [r.device_id for r in routes] + [f"missing-{i}" for i in range(20)]
    found = await registry.lookup_devices(wanted)
    assert found == {r.device_id: r for r in routes}

    by_user = await registry.lookup_users([*users, "missing-user"])
    assert set(by_user) == set(users)
    for u, user in enumerate(users):
        assert by_device(by_user[user]) == {r.device_id: r for r in routes[u * 5 : u * 5 + 5]}

    await registry.refresh(routes, LONG_TTL)  # one batch of 500
    gone = routes[::2]
    results = await asyncio.gather(*(registry.unregister(r) for r in gone))
    assert all(results)
    found = await registry.lookup_devices(wanted)
    assert found == {r.device_id: r for r in routes[1::2]}
    by_user = await registry.lookup_users(users)
    assert sum(len(v) for v in by_user.values()) == 250


async def test_survives_loss_of_the_script_cache(registry: RedisRegistry) -> None:
    """After a restart or failover a node has no cached scripts (NOSCRIPT): EVAL re-caches them."""
    old, new = route("phone", "alice", "old"), route("phone", "alice", "new")
    await registry.register(old, LONG_TTL)
    await registry.client.script_flush()
    await registry.register(new, LONG_TTL)
    await registry.client.script_flush()
    await registry.refresh([old, new], LONG_TTL)
    await registry.client.script_flush()
    assert await registry.unregister(old) is False
    await registry.client.script_flush()
    assert await registry.unregister(new) is True


async def test_ids_with_special_characters(registry: RedisRegistry) -> None:
    weird = [
        route("dev:{1}", "user}x", 'sess"[1]', "edge {a}"),
        route("dév ü", "ユーザー", "s,2", "e"),
        route("", "u-empty-device", "s3"),
    ]
    for r in weird:
        await registry.register(r, LONG_TTL)
    assert await registry.lookup_devices([r.device_id for r in weird]) == {r.device_id: r for r in weird}
    assert await registry.lookup_users([r.user_id for r in weird]) == {r.user_id: [r] for r in weird}
    for r in weird:
        assert await registry.unregister(r) is True
    assert await registry.lookup_users([r.user_id for r in weird]) == {}


# -- cluster specifics ---------------------------------------------------------------------------


@pytest.mark.cluster
async def test_cluster_keys_hash_by_their_id(redis_store: Callable) -> None:
    """A key's slot is its id's hash tag: every key of one user (or device) is in one slot, whatever
    the prefix, so each one-key script is slot-safe and a user's keys never scatter."""
    url = require_env(CLUSTER_ENV)
    regs = [RedisRegistry.from_url(with_prefix(url, p)) for p in ("pp", "t-other")]
    try:
        client = regs[0].client
        assert isinstance(client, RedisCluster)
        for ident in ("alice", "user:42", "ü-ñ", "a-much-longer-user-identifier-0123456789"):
            expected = await client.execute_command("CLUSTER KEYSLOT", f"{{{ident}}}")
            for reg in regs:
                for key in (reg.user_key(ident), reg.device_key(ident), reg.edge_key(ident)):
                    server_slot = await client.execute_command("CLUSTER KEYSLOT", key)
                    assert server_slot == expected == client.keyslot(key), key
        # And the data really lands there: the user's index is on the node serving its slot.
        reg = regs[0]
        async with redis_store(RedisRegistry, "cluster") as reg_test:
            await reg_test.register(route("slot-dev", "slot-user", "s1"), LONG_TTL)
            key = reg_test.user_key("slot-user")
            node = reg_test.client.get_node_from_key(key)
            direct = Redis(host=node.host, port=node.port, decode_responses=True)
            try:
                assert await direct.exists(key) == 1
            finally:
                await direct.aclose()
    finally:
        for reg in regs:
            await reg.close()


# -- unreachable servers (no service needed) -----------------------------------------------------


async def test_unreachable_server_is_registry_unavailable(unreachable_redis) -> None:
    async with unreachable_redis.store(RedisRegistry) as reg:
        port = unreachable_redis.port
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable) as info:
            await reg.ping()
        assert time.monotonic() - started < 3, "ping on a closed port must fail fast"
        message = str(info.value)
        assert f"127.0.0.1:{port}" in message and "ping" in message
        assert "s3cret" not in message, "the password must not leak into errors"
        for call in (
            lambda: reg.register(route("d", "u", "s"), 1),
            lambda: reg.unregister(route("d", "u", "s")),
            lambda: reg.refresh([route("d", "u", "s")], 1),
            lambda: reg.lookup_devices(["d"]),
            lambda: reg.lookup_users(["u"]),
            lambda: reg.set_edge("e", "a:1", 1),
            lambda: reg.remove_edge("e"),
            lambda: reg.edge_addresses(["e"]),
        ):
            with pytest.raises(RegistryUnavailable):
                await call()


def test_url_parsing() -> None:
    reg = RedisRegistry.from_url("redis://127.0.0.1:1/2?prefix=abc")
    assert reg.prefix == "abc" and reg.device_key("d") == "abc:dev:{d}" and reg.user_key("u") == "abc:user:{u}"
    assert RedisRegistry.from_url("redis://127.0.0.1:1").prefix == "pp"
    cluster = RedisRegistry.from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2?prefix=x")
    assert isinstance(cluster.client, RedisCluster)
    assert {(n.host, n.port) for n in cluster.client.startup_nodes} == {("127.0.0.1", 1), ("127.0.0.1", 2)}
    with pytest.raises(ValueError, match="prefix"):
        RedisRegistry.from_url("redis://127.0.0.1:1?prefix=a{b}")
    with pytest.raises(ValueError, match="database 0"):
        RedisRegistry.from_url("redis+cluster://127.0.0.1:1/3")
    with pytest.raises(ValueError):
        RedisRegistry.from_url("memcached://127.0.0.1:1")
    assert "hunter2" not in RedisRegistry.from_url("redis://u:hunter2@127.0.0.1:1/0?password=hunter2").url
    assert "hunter2" not in RedisRegistry.from_url("redis://hunter2@127.0.0.1:1/0").url


# -- failover (own cluster: it kills a master) ---------------------------------------------------


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private 3+3 Redis Cluster in tmp_path, stopped (all nodes, even killed ones) afterwards."""
    require_env(CLUSTER_ENV)  # cluster tests are wanted here (and must run in CI)
    state = tmp_path / "cluster-state"
    start = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120
    )
    try:
        assert start.returncode == 0, f"could not start a private cluster:\n{start.stderr[-3000:]}"
        yield _read_env(state / "env")
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(state)], capture_output=True, timeout=120)


async def _info(host: str, port: int, section: str) -> dict[str, str]:
    direct = Redis(host=host, port=port, decode_responses=True, socket_timeout=2)
    try:
        raw = await direct.execute_command("INFO", section)
    finally:
        await direct.aclose()
    # decode_responses + INFO gives a parsed dict; flatten to strings.
    return {
        k: str(v) if not isinstance(v, dict) else ",".join(f"{a}={b}" for a, b in v.items()) for k, v in raw.items()
    }


async def _replica_caught_up(host: str, port: int) -> bool:
    info = await _info(host, port, "replication")
    master_offset = int(info["master_repl_offset"])
    offsets = [
        int(m.group(1)) for k, v in info.items() if k.startswith("slave") for m in [re.search(r"offset=(\d+)", v)] if m
    ]
    return bool(offsets) and max(offsets) >= master_offset


async def _retry_until(deadline: float, attempt: Callable[[], Any], failures: list[str]) -> float:
    started = time.monotonic()
    while True:
        try:
            await attempt()
            return time.monotonic()
        except RegistryUnavailable as exc:
            failures.append(f"{time.monotonic() - started:.2f}s: {exc}")
        except AssertionError as exc:  # reachable, but not yet serving the slot's data
            failures.append(f"{time.monotonic() - started:.2f}s: assertion: {exc}")
        if time.monotonic() > deadline:
            pytest.fail(
                f"registry did not recover within {FAILOVER_BOUND_S}s of the kill; last errors: {failures[-3:]}"
            )
        await asyncio.sleep(0.1)


@pytest.mark.cluster
async def test_cluster_failover_is_survived(own_cluster: dict[str, str], record_property: Any) -> None:
    reg = RedisRegistry.from_url(with_prefix(own_cluster["PUSHPLAT_TEST_REDIS_CLUSTER_URL"], "fo"))
    try:
        routes = [route(f"fo-dev-{i}", f"fo-user-{i % 10}", f"s-{i}", "edge-1") for i in range(60)]
        for r in routes:
            await reg.register(r, LONG_TTL)
        victim = routes[0]
        key = reg.device_key(victim.device_id)
        client = reg.client
        assert isinstance(client, RedisCluster)
        master = client.get_node_from_key(key)
        # Make the kill lose nothing: wait until the replica has everything the master has.
        await eventually(lambda: _replica_caught_up(master.host, master.port), timeout=10, what="replica to catch up")
        pid = int((await _info(master.host, master.port, "server"))["process_id"])

        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        print(f"\nkilled master {master.host}:{master.port} (pid {pid}) owning slot {client.keyslot(key)}", flush=True)

        failures: list[str] = []
        new_session = route(victim.device_id, victim.user_id, "s-after-failover", "edge-2")

        async def register_and_lookup() -> None:
            await reg.register(new_session, LONG_TTL)
            assert await reg.lookup_devices([victim.device_id]) == {victim.device_id: new_session}
            users = await reg.lookup_users([victim.user_id])
            assert new_session in users.get(victim.user_id, [])

        recovered_at = await _retry_until(killed_at + FAILOVER_BOUND_S, register_and_lookup, failures)
        seconds = recovered_at - killed_at
        print(
            f"registry recovered {seconds:.2f}s after kill -9 of the master "
            f"({len(failures)} failed attempts in between)",
            flush=True,
        )
        for failure in failures:
            print(f"  failed attempt at {failure}", flush=True)
        record_property("failover_seconds", round(seconds, 3))
        record_property("failover_failed_attempts", len(failures))

        # Same client, no restart: everything works and nothing registered before the kill is lost.
        await reg.ping()
        expected = {r.device_id: r for r in routes} | {victim.device_id: new_session}
        assert await reg.lookup_devices(list(expected)) == expected
        assert await reg.unregister(new_session) is True
    finally:
        await reg.close()
