"""Topics: subscriptions per device (store: base/memory/redis) and the rules for topic names."""

from __future__ import annotations

from pushplat.store_url import store_backend
from pushplat.topics.base import Change, Changed, Snapshot, Subscriptions, SubscriptionsUnavailable

__all__ = ["Change", "Changed", "Snapshot", "Subscriptions", "SubscriptionsUnavailable", "open_subscriptions"]


def open_subscriptions(url: str) -> Subscriptions:
    """Subscriptions beside the registry: memory:// or redis://… / redis+cluster://…."""
    if store_backend(url, "subscription store") == "memory":
        from pushplat.topics.memory import MemorySubscriptions

        return MemorySubscriptions()
    from pushplat.topics.redis import RedisSubscriptions

    return RedisSubscriptions.from_url(url)
