"""In-process registry for the embedded platform. Same semantics as Redis, TTLs included."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pushplat.registry.base import DeviceOwned, Registry, Route


class MemoryRegistry(Registry):
    def __init__(self) -> None:
        self._devices: dict[str, tuple[Route, float]] = {}
        self._users: dict[str, dict[str, float]] = {}
        self._edges: dict[str, tuple[str, float]] = {}

    async def register(self, route: Route, ttl_seconds: float) -> Route | None:
        previous = self._live_device(route.device_id)
        if previous is not None and previous.user_id != route.user_id:
            raise DeviceOwned(route.device_id, previous.user_id)
        expires = time.monotonic() + ttl_seconds
        self._devices[route.device_id] = (route, expires)
        self._users.setdefault(route.user_id, {})[route.device_id] = expires
        return previous if previous is not None and previous.session_id != route.session_id else None

    async def unregister(self, route: Route) -> bool:
        current = self._live_device(route.device_id)
        if current is None or current.session_id != route.session_id:
            return False
        del self._devices[route.device_id]
        devices = self._users.get(route.user_id, {})
        devices.pop(route.device_id, None)
        if not devices:
            self._users.pop(route.user_id, None)
        return True

    async def refresh(self, routes: Sequence[Route], ttl_seconds: float) -> list[Route]:
        expires = time.monotonic() + ttl_seconds
        healed = []
        for route in routes:
            current = self._live_device(route.device_id)
            if current is None:
                healed.append(route)
            elif current.session_id != route.session_id:
                continue
            self._devices[route.device_id] = (current or route, expires)
            self._users.setdefault(route.user_id, {})[route.device_id] = expires
        return healed

    async def lookup_devices(self, device_ids: Sequence[str]) -> dict[str, Route]:
        found = {}
        for device_id in device_ids:
            route = self._live_device(device_id)
            if route is not None:
                found[device_id] = route
        return found

    async def lookup_users(self, user_ids: Sequence[str]) -> dict[str, list[Route]]:
        now = time.monotonic()
        found: dict[str, list[Route]] = {}
        for user_id in user_ids:
            devices = self._users.get(user_id, {})
            for device_id, expires in list(devices.items()):
                route = self._live_device(device_id) if expires > now else None
                if route is None or route.user_id != user_id:
                    devices.pop(device_id, None)
                    continue
                found.setdefault(user_id, []).append(route)
        return found

    async def set_edge(self, edge_id: str, address: str, ttl_seconds: float) -> None:
        self._edges[edge_id] = (address, time.monotonic() + ttl_seconds)

    async def remove_edge(self, edge_id: str) -> None:
        self._edges.pop(edge_id, None)

    async def edge_addresses(self, edge_ids: Sequence[str]) -> dict[str, str]:
        now = time.monotonic()
        return {e: self._edges[e][0] for e in edge_ids if e in self._edges and self._edges[e][1] > now}

    async def live_edges(self) -> dict[str, str]:
        now = time.monotonic()
        return {e: address for e, (address, expires) in self._edges.items() if expires > now}

    def _live_device(self, device_id: str) -> Route | None:
        entry = self._devices.get(device_id)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._devices[device_id]
            return None
        return entry[0]
