"""RedisIdempotencyStore against a real redis-server and a real Redis Cluster (see
conftest.py for the services and the shared fixtures)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pushplat.idempotency import Claim, IdempotencyUnavailable, open_idempotency
from pushplat.idempotency.redis import RedisIdempotencyStore
from tests.helpers import eventually

WINDOW = 60.0
SENDER = "billing"


def c(message_id: str, fingerprint: str = "f1") -> Claim:
    return Claim(message_id, fingerprint)


@pytest.fixture
async def store(deployment: str, redis_store: Callable) -> AsyncIterator[RedisIdempotencyStore]:
    async with redis_store(RedisIdempotencyStore, deployment) as opened:
        yield opened


async def test_claim_duplicate_release(store: RedisIdempotencyStore) -> None:
    assert await store.claim(SENDER, "order-1", c("m1"), WINDOW) is None, "the first claim wins"
    assert await store.claim(SENDER, "order-1", c("m2"), WINDOW) == c("m1"), "a repeat gets the holder's id"
    # The holder's own claim again (a pipeline re-run after NOSCRIPT) is its claim, not a conflict.
    assert await store.claim(SENDER, "order-1", c("m1"), WINDOW) is None
    assert await store.claim(SENDER, "order-2", c("m3"), WINDOW) is None, "keys are independent"

    await store.release(SENDER, "order-1", c("m2"))  # not the holder: compare-and-delete does nothing
    assert await store.claim(SENDER, "order-1", c("m4"), WINDOW) == c("m1")
    await store.release(SENDER, "order-1", c("m1"))
    await store.release(SENDER, "order-1", c("m1"))  # twice, or for a key nobody holds: no error
    await store.release(SENDER, "never-claimed", c("m1"))
    assert await store.claim(SENDER, "order-1", c("m5"), WINDOW) is None, "a released key can be claimed again"
    assert await store.claim(SENDER, "order-1", c("m6"), WINDOW) == c("m5")


async def test_the_claim_lasts_for_the_window(store: RedisIdempotencyStore) -> None:
    assert await store.claim(SENDER, "k", c("m1"), 0.3) is None
    assert 0 < await store.client.pttl(store.key(SENDER, "k")) <= 300
    assert await store.claim(SENDER, "k", c("m2"), 0.3) == c("m1"), "a repeat neither extends nor takes the claim"

    started = time.monotonic()

    async def free_again() -> bool:
        return await store.claim(SENDER, "k", c("m3"), WINDOW) is None

    await eventually(free_again, timeout=5, what="a claim with a 0.3 s window to expire")
    assert time.monotonic() - started < 3
    assert await store.claim(SENDER, "k", c("m4"), WINDOW) == c("m3")
    assert await store.client.pttl(store.key(SENDER, "k")) > (WINDOW - 5) * 1000


async def test_concurrent_claims_have_exactly_one_winner(deployment: str, redis_store: Callable) -> None:
    # Two stores with their own clients, as two api processes would have.
    async with redis_store(RedisIdempotencyStore, deployment) as first:
        second = RedisIdempotencyStore.from_url(first.url)  # the test URLs carry no password to mask
        try:
            for round_ in range(5):
                key = f"race-{round_}"
                ids = [f"m{round_}-{i}" for i in range(20)]
                results = await asyncio.gather(
                    *(
                        (first if i % 2 else second).claim(SENDER, key, c(message_id), WINDOW)
                        for i, message_id in enumerate(ids)
                    )
                )
                winners = [message_id for message_id, result in zip(ids, results, strict=True) if result is None]
                assert len(winners) == 1, results
                assert all(result == c(winners[0]) for result in results if result is not None), results
                assert await first.claim(SENDER, key, c("late"), WINDOW) == c(winners[0])
        finally:
            await second.close()


async def test_keys_with_special_characters(store: RedisIdempotencyStore, weird_ids: list[str]) -> None:
    for i, key in enumerate(weird_ids):
        assert await store.claim(SENDER, key, c(f"m{i}"), WINDOW) is None, f"{key!r} collided with another key"
    for i, key in enumerate(weird_ids):
        assert await store.claim(SENDER, key, c("other"), WINDOW) == c(f"m{i}")
        await store.release(SENDER, key, c(f"m{i}"))
        assert await store.claim(SENDER, key, c("other"), WINDOW) is None


async def test_survives_loss_of_the_script_cache(store: RedisIdempotencyStore) -> None:
    await store.client.script_flush()
    assert await store.claim(SENDER, "k", c("m1"), WINDOW) is None
    await store.client.script_flush()
    assert await store.claim(SENDER, "k", c("m2"), WINDOW) == c("m1")
    await store.client.script_flush()
    await store.release(SENDER, "k", c("m1"))
    assert await store.claim(SENDER, "k", c("m2"), WINDOW) is None


async def test_keys_are_scoped_to_the_sender_and_remember_the_request(store: RedisIdempotencyStore) -> None:
    assert await store.claim("billing", "order-1", c("m1", "fp-a"), WINDOW) is None
    # Another sender's key of the same name is another key: it neither sees nor blocks the first.
    assert await store.claim("key:0123456789abcdef", "order-1", c("m2", "fp-b"), WINDOW) is None
    assert await store.claim("", "order-1", c("m3", "fp-c"), WINDOW) is None, "the anonymous sender too"
    # A repeat reads back the holder's message id AND its request fingerprint, per sender.
    assert await store.claim("billing", "order-1", c("m9", "fp-x"), WINDOW) == c("m1", "fp-a")
    assert await store.claim("key:0123456789abcdef", "order-1", c("m9", "fp-x"), WINDOW) == c("m2", "fp-b")
    # Sender and key cannot be confused by where the separator falls.
    assert await store.claim("a:b", "c", c("m4"), WINDOW) is None
    assert await store.claim("a", "b:c", c("m5"), WINDOW) is None
    # Only the exact claim releases a key: same message id with another fingerprint does not.
    await store.release("billing", "order-1", c("m1", "fp-other"))
    assert await store.claim("billing", "order-1", c("m9", "fp-x"), WINDOW) == c("m1", "fp-a")
    await store.release("billing", "order-1", c("m1", "fp-a"))
    assert await store.claim("billing", "order-1", c("m9", "fp-x"), WINDOW) is None
    assert await store.claim("key:0123456789abcdef", "order-1", c("m0"), WINDOW) == c("m2", "fp-b")


# -- configuration and unreachable servers (no service needed) ------------------------------------


def test_open_idempotency() -> None:
    store = open_idempotency("redis://127.0.0.1:1/0?prefix=abc&status_ttl=5")
    assert isinstance(store, RedisIdempotencyStore)
    assert store.prefix == "abc" and store.key(SENDER, "k") == "abc:idem:{7:billing:k}"


async def test_unreachable_server_is_idempotency_unavailable(unreachable_redis) -> None:
    async with unreachable_redis.store(RedisIdempotencyStore) as store:
        for call in (
            lambda: store.ping(),
            lambda: store.claim(SENDER, "k", c("m"), WINDOW),
            lambda: store.release(SENDER, "k", c("m")),
        ):
            await unreachable_redis.assert_unavailable_fast(call, IdempotencyUnavailable)


async def test_claim_many_is_one_ordered_round_trip(store: RedisIdempotencyStore) -> None:
    """A SendBatch's keys: claimed in order, so a key repeated later in the batch sees the earlier claim."""
    await store.claim(SENDER, "held", c("old"), WINDOW)
    claims = [("a", c("m1")), ("held", c("m2")), ("a", c("m3", "f2")), ("b", c("m4"))]
    assert await store.claim_many(SENDER, claims, WINDOW) == [None, c("old"), c("m1"), None]
    assert await store.claim_many(SENDER, [], WINDOW) == []
    await store.release_many(SENDER, [("a", c("m1")), ("b", c("m4")), ("held", c("m2"))])
    assert await store.claim(SENDER, "a", c("m5"), WINDOW) is None, "released"
    assert await store.claim(SENDER, "held", c("m6"), WINDOW) == c("old"), "not ours: kept"
    await store.client.script_flush()
    assert await store.claim_many(SENDER, [("c", c("m7")), ("c", c("m8"))], WINDOW) == [None, c("m7")]
