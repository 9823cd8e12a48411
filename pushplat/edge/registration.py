"""PushRegistrationHandler: keeps the registry in step with the edge's sessions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from pushplat.edge.hub import Hub
from pushplat.edge.session import Session
from pushplat.edge_link import EdgeLink
from pushplat.logs import kv
from pushplat.metrics import REGISTRY_LATENCY
from pushplat.registry import Registry, Route
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.edge")


def route_of(session: Session) -> Route:
    return Route(session.device_id, session.user_id, session.edge_id, session.session_id)


class PushRegistrationHandler:
    def __init__(self, registry: Registry, hub: Hub, edge_id: str, ttl_seconds: float, edges: EdgeLink) -> None:
        self.registry = registry
        # To tell another edge that one of its sessions was replaced by a connection here.
        self.edges = edges
        self._evictions: set[asyncio.Task[None]] = set()
        self.hub = hub
        self.edge_id = edge_id
        self.address = ""
        self.ttl_seconds = ttl_seconds
        # One lock per device: a fast reconnect must not let the old session's unregister
        # (or a slow register) land after the new session's register.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, address: str) -> None:
        self.address = address
        await self.registry.set_edge(self.edge_id, self.address, self.ttl_seconds)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="registry-refresh")

    async def stop(self) -> None:
        if self._refresher:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        await asyncio.gather(*self._evictions, return_exceptions=True)

    async def withdraw_edge(self) -> None:
        """Stop routers from picking this edge (drain)."""
        await self.registry.remove_edge(self.edge_id)

    async def register(self, session: Session) -> None:
        async with self._lock(session.device_id):
            if self.hub.get(session.device_id) is not session:
                return  # already replaced by a newer connection
            started = time.perf_counter()
            previous = await self.registry.register(route_of(session), self.ttl_seconds)
            REGISTRY_LATENCY.labels("register").observe(time.perf_counter() - started)
        if previous is not None and previous.edge_id != self.edge_id:
            # The device moved here while its old stream lingers there (often half-open):
            # end it now rather than when its heartbeat times out. Best effort, off the connect path.
            task = asyncio.create_task(self._evict_elsewhere(previous))
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)

    async def _evict_elsewhere(self, previous: Route) -> None:
        try:
            address = (await self.registry.edge_addresses([previous.edge_id])).get(previous.edge_id)
            if address is None:
                return  # that edge is gone; its sessions went with it
            evicted = await self.edges.evict(
                previous.edge_id,
                address,
                delivery_pb2.EvictRequest(
                    device_id=previous.device_id, session_id=previous.session_id, replaced_by_edge_id=self.edge_id
                ),
            )
            log.info(
                kv(
                    "session.evicted_elsewhere",
                    device=previous.device_id,
                    session=previous.session_id,
                    edge=previous.edge_id,
                    evicted=evicted,
                )
            )
        except Exception as exc:
            log.warning(kv("session.evict_failed", device=previous.device_id, edge=previous.edge_id, error=repr(exc)))

    async def unregister(self, session: Session) -> None:
        async with self._lock(session.device_id):
            started = time.perf_counter()
            removed = await self.registry.unregister(route_of(session))
            REGISTRY_LATENCY.labels("unregister").observe(time.perf_counter() - started)
        if not removed:
            log.debug(kv("registry.unregister_skipped", device=session.device_id, session=session.session_id))

    def _lock(self, device_id: str) -> _DeviceLock:
        return _DeviceLock(self._locks, device_id)

    async def _refresh_loop(self) -> None:
        interval = max(self.ttl_seconds / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.registry.set_edge(self.edge_id, self.address, self.ttl_seconds)
                routes = [route_of(s) for s in self.hub if not s.closed]
                for i in range(0, len(routes), 500):
                    await self.registry.refresh(routes[i : i + 500], self.ttl_seconds)
            except Exception as exc:  # keep refreshing: a registry blip must not kill the edge
                log.warning(kv("registry.refresh_failed", edge=self.edge_id, error=repr(exc)))


class _DeviceLock:
    """A per-device lock that forgets the device once nobody holds or waits for it."""

    def __init__(self, locks: defaultdict[str, asyncio.Lock], device_id: str) -> None:
        self._locks = locks
        self._device_id = device_id

    async def __aenter__(self) -> None:
        await self._locks[self._device_id].acquire()

    async def __aexit__(self, *exc: object) -> None:
        lock = self._locks[self._device_id]
        lock.release()
        if not lock.locked() and not getattr(lock, "_waiters", None):
            self._locks.pop(self._device_id, None)
