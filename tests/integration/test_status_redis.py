"""RedisStatusStore (the receipt status table) against a real redis-server and a real Redis
Cluster (see conftest.py for the services and the shared fixtures)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from pushplat_client.v1 import push_pb2

from pushplat.receipts.base import ReceiptEvent, State
from pushplat.receipts.memory import MemoryReceipts
from pushplat.receipts.status_redis import DEFAULT_STATUS_TTL_S, RedisStatusStore, StatusUnavailable
from pushplat.registry.redis import RedisRegistry
from tests.helpers import eventually

ACCEPTED = State.DELIVERY_STATE_ACCEPTED
DELIVERED = State.DELIVERY_STATE_DELIVERED_TO_EDGE
ACKED = State.DELIVERY_STATE_ACKED
NO_ROUTE = State.DELIVERY_STATE_NO_ROUTE
DROPPED = State.DELIVERY_STATE_DROPPED


def rcpt(message_id: str, state: int, device: str = "", at: int = 1, **fields: object) -> ReceiptEvent:
    labels = fields.pop("labels", None) or None
    return ReceiptEvent(message_id, state, device_id=device, at_ms=at, labels=labels, **fields)  # type: ignore[arg-type]


def device_states(status: push_pb2.GetStatusResponse | None) -> dict[str, int]:
    assert status is not None
    return {d.device_id: d.state for d in status.devices}


@pytest.fixture
async def store(deployment: str, redis_store: Callable) -> AsyncIterator[RedisStatusStore]:
    async with redis_store(RedisStatusStore, deployment) as opened:
        yield opened


async def test_status_follows_the_merge_rule(store: RedisStatusStore) -> None:
    assert await store.status("unknown", "") is None
    await store.record([rcpt("m1", ACCEPTED, labels={"campaign": "c1"})])
    await store.record(
        [
            rcpt("m1", DELIVERED, "phone", at=10, edge_id="edge-1", user_id="kim"),
            rcpt("m1", NO_ROUTE, "tv", at=11, detail="offline; kept in inbox", labels={"campaign": "other"}),
        ]
    )
    await store.record([rcpt("m1", ACKED, "phone", at=12)])
    await store.record([rcpt("m1", DELIVERED, "phone", at=13, edge_id="edge-2")])  # a late duplicate

    status = await store.status("m1", "")
    expected = push_pb2.GetStatusResponse(message_id="m1", state=DELIVERED, labels={"campaign": "c1"})
    expected.devices.add(device_id="phone", state=ACKED, updated_at_ms=12, edge_id="edge-1")
    expected.devices.add(device_id="tv", state=NO_ROUTE, updated_at_ms=11, detail="offline; kept in inbox")
    assert status == expected, "ACKED is final for a device; edge and first labels are kept"
    assert await store.status("unknown", "") is None
    await store.record([])  # nothing to do


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_status_is_answered_only_to_its_sender(store: RedisStatusStore, backend: str) -> None:
    memory = MemoryReceipts()

    async def record_in_memory(events: list[ReceiptEvent]) -> None:
        memory.record(events)

    record = store.record if backend == "redis" else record_in_memory
    status = store.status if backend == "redis" else memory.status
    # The router's receipt may land before the api's ACCEPTED: the owner is set whenever it comes.
    await record([rcpt("m1", DELIVERED, "phone", at=2)])
    await record([rcpt("m1", ACCEPTED, at=1, sender_id="billing")])
    await record([rcpt("m1", ACKED, "phone", at=3, sender_id="someone-else")])  # first sender wins
    assert device_states(await status("m1", "billing")) == {"phone": ACKED}
    for other in ("marketing", "key:0123456789abcdef", ""):
        assert await status("m1", other) is None, f"{other!r} must not read billing's status"
    await record([rcpt("m2", ACCEPTED, at=1)])  # an api without keys: the anonymous sender
    assert (await status("m2", "")) is not None and await status("m2", "billing") is None


async def test_concurrent_writers_never_lose_updates(store: RedisStatusStore) -> None:
    """Router and edges write receipts of one message from different processes, in any order."""
    other = RedisStatusStore.from_url(store.url)  # a second client; the test URLs carry no password
    try:
        devices = [f"dev-{i}" for i in range(40)]
        calls = [(store, [rcpt("m", ACCEPTED, labels={"k": "v"})])]
        for i, device in enumerate(devices):
            writer = store if i % 2 else other
            calls.append((writer, [rcpt("m", DELIVERED, device, at=100, edge_id="edge-1")]))
            calls.append((other if i % 2 else store, [rcpt("m", ACKED, device, at=200)]))
        random.Random(7).shuffle(calls)
        await asyncio.gather(*(writer.record(receipts) for writer, receipts in calls))

        status = await store.status("m", "")
        assert status is not None
        assert device_states(status) == dict.fromkeys(devices, ACKED), "an ack is never overwritten by a delivery"
        assert all(d.updated_at_ms == 200 for d in status.devices), "each device's time is its ack's"
        assert dict(status.labels) == {"k": "v"}
    finally:
        await other.close()


@pytest.mark.parametrize("seed", range(3))
async def test_matches_the_memory_backend_for_any_sequence(store: RedisStatusStore, seed: int) -> None:
    """Receipts recorded in order (in batches of any size, several per message in one batch) give
    exactly what the memory backend gives: the two implementations of the merge rule agree."""
    rng = random.Random(seed)
    states = [ACCEPTED, DELIVERED, ACKED, NO_ROUTE, DROPPED, State.DELIVERY_STATE_EXPIRED]
    receipts = [
        rcpt(
            rng.choice(["a", "b"]),
            rng.choice(states),
            rng.choice(["", "d1", "d2", "d3", "d4"]),
            at=step,
            edge_id=rng.choice(["", "e1", "e2"]),
            detail=rng.choice(["", "why"]),
            labels=rng.choice([{}, {"x": str(step)}]),
        )
        for step in range(120)
    ]
    memory = MemoryReceipts()
    memory.record(receipts)
    expected = {m: await memory.status(m, "") for m in {r.message_id for r in receipts}}
    while receipts:
        size = rng.randint(1, 10)
        batch, receipts = receipts[:size], receipts[size:]
        await store.record(batch)
    for message_id, status in expected.items():
        assert await store.status(message_id, "") == status


async def test_status_expires_after_its_ttl(redis_store: Callable) -> None:
    async with redis_store(RedisStatusStore, "standalone", "status_ttl=0.3") as store:
        assert store.ttl_seconds == 0.3
        await store.record([rcpt("m", ACCEPTED)])
        assert 0 < await store.client.pttl(store.key("m")) <= 300
        started = time.monotonic()

        async def forgotten() -> bool:
            return await store.status("m", "") is None

        await eventually(forgotten, timeout=5, what="a status with a 0.3 s ttl to expire")
        assert time.monotonic() - started < 3


async def test_ttl_restarts_with_every_receipt(store: RedisStatusStore) -> None:
    await store.record([rcpt("m", ACCEPTED)])
    assert (DEFAULT_STATUS_TTL_S - 60) * 1000 < await store.client.pttl(store.key("m")) <= DEFAULT_STATUS_TTL_S * 1000
    await store.client.pexpire(store.key("m"), 10_000)
    await store.record([rcpt("m", DELIVERED, "d")])
    assert await store.client.pttl(store.key("m")) > 10_000


async def test_many_messages_in_one_call(store: RedisStatusStore) -> None:
    receipts = [rcpt(f"m{i}", DELIVERED, f"d{i % 7}", at=i) for i in range(500)]  # every cluster node
    await store.record(receipts + [rcpt(f"m{i}", ACKED, f"d{i % 7}", at=1000 + i) for i in range(0, 500, 2)])
    for i in range(500):
        assert device_states(await store.status(f"m{i}", "")) == {f"d{i % 7}": ACKED if i % 2 == 0 else DELIVERED}


async def test_ids_with_special_characters(store: RedisStatusStore, weird_ids: list[str]) -> None:
    message_ids = [m for m in weird_ids if m]
    for i, message_id in enumerate(message_ids):
        await store.record([rcpt(message_id, DELIVERED, weird_ids[-1 - i], at=i)])
    for i, message_id in enumerate(message_ids):
        status = await store.status(message_id, "")
        assert status is not None and status.message_id == message_id
        assert device_states(status) == {weird_ids[-1 - i]: DELIVERED}
    # A receipt without a message id has nothing to describe: it is skipped.
    await store.record([rcpt("", ACCEPTED)])
    assert await store.status("", "") is None


async def test_survives_loss_of_the_script_cache(store: RedisStatusStore) -> None:
    await store.record([rcpt("m", ACKED, "d", at=1)])
    await store.client.script_flush()
    await store.record([rcpt("m", DELIVERED, "d", at=2), rcpt("m", NO_ROUTE, "e", at=3)])
    assert device_states(await store.status("m", "")) == {"d": ACKED, "e": NO_ROUTE}


# -- configuration and unreachable servers (no service needed) ------------------------------------


async def test_one_url_serves_every_store(deployment: str, redis_store: Callable) -> None:
    """?status_ttl= is the status store's; the registry (and others) on the same URL ignore it."""
    async with redis_store(RedisStatusStore, deployment, "status_ttl=120") as store:
        assert store.ttl_seconds == 120
        registry = RedisRegistry.from_url(store.url)
        try:
            await registry.ping()
            assert registry.prefix == store.prefix
        finally:
            await registry.close()


def test_url_parsing() -> None:
    store = RedisStatusStore.from_url("redis://127.0.0.1:1/0?prefix=abc")
    assert store.prefix == "abc" and store.ttl_seconds == DEFAULT_STATUS_TTL_S
    assert store.key("m") == "abc:st:{m}"
    with pytest.raises(ValueError, match="positive"):
        RedisStatusStore.from_url("redis://127.0.0.1:1/0?status_ttl=0")
    with pytest.raises(ValueError, match="status store URL"):
        RedisStatusStore.from_url("redis+cluster://127.0.0.1:1/2")


async def test_unreachable_server_is_status_unavailable(unreachable_redis) -> None:
    async with unreachable_redis.store(RedisStatusStore) as store:
        for call in (
            lambda: store.ping(),
            lambda: store.record([rcpt("m", ACCEPTED)]),
            lambda: store.status("m", ""),
        ):
            await unreachable_redis.assert_unavailable_fast(call, StatusUnavailable)
