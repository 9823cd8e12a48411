"""Push registry backends, chosen by URL: memory://, redis://host:port/db, redis+cluster://host:port."""

from __future__ import annotations

from urllib.parse import urlparse

from pushplat.registry.base import Registry, RegistryUnavailable, Route

__all__ = ["Registry", "RegistryUnavailable", "Route", "open_registry"]


def open_registry(url: str) -> Registry:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from pushplat.registry.memory import MemoryRegistry

        return MemoryRegistry()
    if scheme in ("redis", "rediss", "redis+cluster"):
        from pushplat.registry.redis import RedisRegistry

        return RedisRegistry.from_url(url)
    raise ValueError(
        f"unsupported registry URL {url!r}: use memory://, redis://host:port/db or redis+cluster://host:port"
    )
