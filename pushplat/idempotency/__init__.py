"""Idempotency stores, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from pushplat.idempotency.base import Claim, IdempotencyStore, IdempotencyUnavailable
from pushplat.store_url import store_backend

__all__ = ["Claim", "IdempotencyStore", "IdempotencyUnavailable", "open_idempotency"]


def open_idempotency(url: str) -> IdempotencyStore:
    if store_backend(url, "idempotency store") == "memory":
        from pushplat.idempotency.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore()
    from pushplat.idempotency.redis import RedisIdempotencyStore

    return RedisIdempotencyStore.from_url(url)
