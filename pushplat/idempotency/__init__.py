"""Idempotency stores, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from urllib.parse import urlparse

from pushplat.idempotency.base import IdempotencyStore, IdempotencyUnavailable

__all__ = ["IdempotencyStore", "IdempotencyUnavailable", "open_idempotency"]


def open_idempotency(url: str) -> IdempotencyStore:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from pushplat.idempotency.memory import MemoryIdempotencyStore

        return MemoryIdempotencyStore()
    if scheme in ("redis", "rediss", "redis+cluster"):
        from pushplat.idempotency.redis import RedisIdempotencyStore

        return RedisIdempotencyStore.from_url(url)
    raise ValueError(f"unsupported idempotency store URL {url!r}")
