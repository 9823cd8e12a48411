"""The push registry: which edge and session hold each device, and where each edge listens.

Maps device -> Route, user -> {devices}, edge_id -> delivery address. Every entry has a TTL
that its owner refreshes, so a dead edge's entries expire on their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


class RegistryUnavailable(Exception):
    """The registry backend cannot be reached or failed."""


class DeviceOwned(Exception):
    """A register for a device whose live route belongs to another user; nothing was changed."""

    def __init__(self, device_id: str, owner: str) -> None:
        super().__init__(f"device {device_id!r} is connected as another user")
        self.device_id = device_id
        self.owner = owner


@dataclass(frozen=True)
class Route:
    device_id: str
    user_id: str
    edge_id: str
    session_id: str


class Registry(ABC):
    @abstractmethod
    async def register(self, route: Route, ttl_seconds: float) -> Route | None:
        """Point the device at this session and add it to its user; return the live route this
        replaced (another session of the same user, perhaps on another edge), if any. Raise
        DeviceOwned, changing nothing, if the device's live route belongs to another user."""

    @abstractmethod
    async def unregister(self, route: Route) -> bool:
        """Compare-and-delete: remove the device's entry only if it still names route's session."""

    @abstractmethod
    async def refresh(self, routes: Sequence[Route], ttl_seconds: float) -> list[Route]:
        """Extend the TTL of entries this edge still owns, and re-create those that are gone (the
        store lost them: a restart without persistence, a flush, a failover to a replica that
        lagged). Returns the re-created routes. An entry that names another session is left alone."""

    @abstractmethod
    async def lookup_devices(self, device_ids: Sequence[str]) -> dict[str, Route]:
        """Live routes for these devices; absent devices are left out."""

    @abstractmethod
    async def lookup_users(self, user_ids: Sequence[str]) -> dict[str, list[Route]]:
        """Live routes of every connected device of these users."""

    @abstractmethod
    async def set_edge(self, edge_id: str, address: str, ttl_seconds: float) -> None:
        """Publish (or refresh) where routers reach this edge's Delivery service."""

    @abstractmethod
    async def remove_edge(self, edge_id: str) -> None: ...

    @abstractmethod
    async def edge_addresses(self, edge_ids: Sequence[str]) -> dict[str, str]: ...

    @abstractmethod
    async def live_edges(self) -> dict[str, str]:
        """Every edge whose entry is live, with its address (a topic message goes to each)."""

    async def ping(self) -> None:
        """Raise RegistryUnavailable if the backend is unreachable."""

    async def close(self) -> None:
        return None
