"""Idempotency stores, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from pushplat.idempotency.base import Claim, IdempotencyStore, IdempotencyUnavailable
from pushplat.store_url import store_backend

__all__ = ["Claim", "IdempotencyStore", "IdempotencyUnavailable", "open_idempotency"]


def open_idempotency(url: str, memory_bytes: int | None = None) -> IdempotencyStore:
    """memory_bytes bounds an in-memory store (--memory-idempotency-bytes)."""
    if store_backend(url, "idempotency store") == "memory":
        from pushplat.idempotency.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore() if memory_bytes is None else MemoryIdempotencyStore(memory_bytes)
    from pushplat.idempotency.redis import RedisIdempotencyStore

    return RedisIdempotencyStore.from_url(url)
