"""PushRegistrationHandler: keeps the registry in step with the edge's sessions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

from pushplat.edge.hub import Hub
from pushplat.edge.session import Session
from pushplat.edge_link import EdgeLink
from pushplat.logs import kv
from pushplat.metrics import REGISTRY_HEALED, REGISTRY_LATENCY
from pushplat.registry import Registry, Route
from pushplat.v1 import delivery_pb2

log = logging.getLogger("pushplat.edge")


def route_of(session: Session) -> Route:
    return Route(session.device_id, session.user_id, session.edge_id, session.session_id)


# What the edge does for sessions whose registry entries it had to re-create (see healing.py).
Healed = Callable[[list[Session]], Awaitable[None]]
REFRESH_CHUNK = 500


class PushRegistrationHandler:
    """Registers sessions, refreshes their entries every ttl/3 and re-creates the ones the store
    lost. Every `check_seconds` it also looks for its own edge entry: if that is gone, the store
    lost its data (a restart without persistence, a flush), and everything is re-created at once
    rather than at the next refresh."""

    def __init__(
        self,
        registry: Registry,
        hub: Hub,
        edge_id: str,
        ttl_seconds: float,
        edges: EdgeLink,
        check_seconds: float = 0.0,
        on_healed: Healed | None = None,
    ) -> None:
        self.registry = registry
        self.check_seconds = check_seconds
        self.on_healed = on_healed
        self.withdrawn = False
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
        self.withdrawn = True
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
        await self.unregister_route(route_of(session))

    async def unregister_route(self, route: Route) -> None:
        async with self._lock(route.device_id):
            started = time.perf_counter()
            removed = await self.registry.unregister(route)
            REGISTRY_LATENCY.labels("unregister").observe(time.perf_counter() - started)
        if not removed:
            log.debug(kv("registry.unregister_skipped", device=route.device_id, session=route.session_id))

    def _lock(self, device_id: str) -> _DeviceLock:
        return _DeviceLock(self._locks, device_id)

    async def _refresh_loop(self) -> None:
        interval = max(self.ttl_seconds / 3, 0.5)
        check = self.check_seconds if 0 < self.check_seconds < interval else interval
        due = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(min(check, due - time.monotonic()), 0.0))
            try:
                if time.monotonic() < due:
                    if self.withdrawn or not await self._lost_own_entry():
                        continue
                    log.warning(
                        kv(
                            "registry.lost",
                            edge=self.edge_id,
                            detail="the registry no longer has this edge: re-creating every session's entries",
                        )
                    )
                due = time.monotonic() + interval
                await self.refresh()
            except Exception as exc:  # keep refreshing: a registry blip must not kill the edge
                log.warning(kv("registry.refresh_failed", edge=self.edge_id, error=repr(exc)))

    async def _lost_own_entry(self) -> bool:
        return self.edge_id not in await self.registry.edge_addresses([self.edge_id])

    async def refresh(self) -> int:
        """Extend every live session's entries, re-create those the store lost; how many were."""
        await self.registry.set_edge(self.edge_id, self.address, self.ttl_seconds)
        routes = [route_of(s) for s in self.hub if not s.closed]
        healed = []
        for i in range(0, len(routes), REFRESH_CHUNK):
            healed += await self.registry.refresh(routes[i : i + REFRESH_CHUNK], self.ttl_seconds)
        if not healed:
            return 0
        live, ended = [], []
        for route in healed:
            session = self.hub.get(route.device_id)
            if session is not None and session.session_id == route.session_id and not session.closed:
                live.append(session)
            else:
                ended.append(route)
        # A session that ended while the refresh ran may have unregistered before its entry was
        # re-created: remove it again (compare-and-delete, so a newer session is safe).
        for route in ended:
            await self.unregister_route(route)
        REGISTRY_HEALED.inc(len(live))
        log.warning(kv("registry.healed", edge=self.edge_id, sessions=len(live), ended=len(ended) or None))
        if live and self.on_healed is not None:
            await self.on_healed(live)
        return len(live)


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
