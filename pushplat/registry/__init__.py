"""Push registry backends, chosen by URL: memory://, redis://host:port/db, redis+cluster://host:port."""

from __future__ import annotations

from pushplat.registry.base import DeviceOwned, Registry, RegistryUnavailable, Route
from pushplat.store_url import store_backend

__all__ = ["DeviceOwned", "Registry", "RegistryUnavailable", "Route", "open_registry"]


def open_registry(url: str) -> Registry:
    if store_backend(url, "registry") == "memory":
        from pushplat.registry.memory import MemoryRegistry

        return MemoryRegistry()
    from pushplat.registry.redis import RedisRegistry

    return RedisRegistry.from_url(url)
