"""In-process subscriptions for the embedded platform (pushplat dev). Same semantics as Redis,
TTLs included; lost with the process, like the rest of its state."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from pushplat.metrics import LIMITS_HIT
from pushplat.topics.base import Change, Changed, Snapshot, Subscriptions

# Devices kept at most; past it the one changed or connected longest ago is forgotten early.
MAX_DEVICES = 1_000_000


class _Device:
    __slots__ = ("expires", "topics", "version")

    def __init__(self) -> None:
        self.topics: dict[str, None] = {}
        self.version = 0
        self.expires = 0.0


class MemorySubscriptions(Subscriptions):
    def __init__(self, max_devices: int = MAX_DEVICES) -> None:
        self.max_devices = max_devices
        # Least recently touched first, so expired devices are in front.
        self._devices: OrderedDict[str, _Device] = OrderedDict()

    async def change_many(
        self, changes: Sequence[Change], max_topics: int, ttl_seconds: float, snapshot: bool = False
    ) -> list[Changed]:
        out = []
        for change in changes:
            device = self._live(change.device_id) or _Device()
            subscribed, full = [], []
            for topic in change.subscribe:
                if topic in device.topics:
                    subscribed.append(topic)
                elif len(device.topics) < max_topics:
                    device.topics[topic] = None
                    subscribed.append(topic)
                else:
                    full.append(topic)
            unsubscribed = []
            for topic in change.unsubscribe:
                device.topics.pop(topic, None)
                unsubscribed.append(topic)
            device.version += 1
            self._keep(change.device_id, device, ttl_seconds)
            topics = sorted(device.topics) if snapshot else None
            out.append(Changed(subscribed, unsubscribed, full, len(device.topics), device.version, topics))
        return out

    async def get(self, device_id: str, touch_ttl_seconds: float = 0) -> Snapshot:
        device = self._live(device_id)
        if device is None:
            return Snapshot([], 0)
        if touch_ttl_seconds > 0:
            self._keep(device_id, device, touch_ttl_seconds)
        return Snapshot(sorted(device.topics), device.version)

    async def forget(self, device_id: str) -> None:
        self._devices.pop(device_id, None)

    def _live(self, device_id: str) -> _Device | None:
        device = self._devices.get(device_id)
        if device is not None and device.expires <= time.monotonic():
            del self._devices[device_id]
            return None
        return device

    def _keep(self, device_id: str, device: _Device, ttl_seconds: float) -> None:
        device.expires = time.monotonic() + ttl_seconds
        self._devices[device_id] = device
        self._devices.move_to_end(device_id)
        now = time.monotonic()
        while self._devices:
            oldest_id, oldest = next(iter(self._devices.items()))
            if oldest.expires > now and len(self._devices) <= self.max_devices:
                break
            if oldest.expires > now:
                LIMITS_HIT.labels("subscription_devices").inc()
            del self._devices[oldest_id]
