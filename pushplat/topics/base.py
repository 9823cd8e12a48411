"""Subscriptions: which topics each device is subscribed to.

They belong to the device, not to a connection: the edge restores them on every connect, on
any edge. They live beside the registry (memory or Redis), with the lifetime of the device's
memory (--device-memory-seconds, refreshed on every connect and every change), so they are
forgotten with the device. Every change counts up the device's version, so an edge that holds
a snapshot can tell an older change (already in it) from a newer one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple


class SubscriptionsUnavailable(Exception):
    """The subscription store cannot be reached or failed."""


class Change(NamedTuple):
    """One change of one device's topics: subscribe some, unsubscribe others."""

    device_id: str
    subscribe: Sequence[str] = ()
    unsubscribe: Sequence[str] = ()


class Changed(NamedTuple):
    """What a change did. ``subscribed``: the device now holds these (newly or already);
    ``unsubscribed``: it no longer does; ``full``: refused, the device held max_topics.
    ``topics``: every topic after the change, when asked for (the edge's snapshot)."""

    subscribed: list[str]
    unsubscribed: list[str]
    full: list[str]
    count: int
    version: int
    topics: list[str] | None = None


class Snapshot(NamedTuple):
    topics: list[str]
    version: int


class Subscriptions(ABC):
    @abstractmethod
    async def change_many(
        self, changes: Sequence[Change], max_topics: int, ttl_seconds: float, snapshot: bool = False
    ) -> list[Changed]:
        """Apply each change atomically for its device (in one round trip where the backend can).
        A subscribe that would take a device past max_topics is refused for that topic alone."""

    async def change(self, change: Change, max_topics: int, ttl_seconds: float, snapshot: bool = False) -> Changed:
        return (await self.change_many([change], max_topics, ttl_seconds, snapshot))[0]

    @abstractmethod
    async def get(self, device_id: str, touch_ttl_seconds: float = 0) -> Snapshot:
        """The device's topics (sorted) and version; touch_ttl_seconds > 0 also extends their life."""

    @abstractmethod
    async def forget(self, device_id: str) -> None:
        """Drop every subscription of the device."""

    async def ping(self) -> None:
        """Raise SubscriptionsUnavailable if the backend is unreachable."""

    async def close(self) -> None:
        return None
