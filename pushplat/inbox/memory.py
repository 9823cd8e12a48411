"""In-process inbox for the embedded platform. Lost with the process (see README: guarantees).

Bounded three ways: messages per device (--inbox-limit), bytes over all devices
(--memory-inbox-bytes; the oldest message of any device goes first) and device bindings
(--memory-inbox-devices; the least recently connected go first)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from pushplat_client.v1 import message_pb2

from pushplat.bounded import ByteBoundedMap
from pushplat.inbox.base import Inbox
from pushplat.messages import is_expired, now_ms
from pushplat.metrics import DROPPED, LIMITS_HIT

# Device bindings kept at most; past it the least recently connected device is forgotten early.
MAX_DEVICES = 1_000_000
# A stored message costs its serialized size plus about this much (RSS of 20,000 messages: 490-540
# bytes beyond ByteSize(): the protobuf object and two dict slots).
MESSAGE_OVERHEAD_BYTES = 512
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class MemoryInbox(Inbox):
    def __init__(
        self, max_per_device: int = 10_000, max_devices: int = MAX_DEVICES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_per_device < 1 or max_devices < 1:
            raise ValueError(f"inbox bounds must be at least 1, got {max_per_device} per device, {max_devices} devices")
        self.max_per_device = max_per_device
        self.max_devices = max_devices
        # (device, message id) of every stored message, oldest first, with its size: the byte bound.
        self._sizes: ByteBoundedMap[tuple[str, str], None] = ByteBoundedMap(max_bytes, "inbox", self._evicted)
        # device -> (user, expires); least recently enrolled first, so expired ones are in front.
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Insertion-ordered dicts: iteration is oldest first.
        self._boxes: dict[str, dict[str, message_pb2.Message]] = {}
        self._collapse: dict[str, dict[str, str]] = {}
        self._users: dict[str, dict[str, float]] = {}

    async def put(self, device_ids: Sequence[str], message: message_pb2.Message) -> list[str]:
        replaced: list[str] = []
        size = message.ByteSize() + MESSAGE_OVERHEAD_BYTES
        for device_id in device_ids:
            box = self._boxes.setdefault(device_id, {})
            if message.collapse_key:
                keys = self._collapse.setdefault(device_id, {})
                older = keys.get(message.collapse_key)
                if older is not None and older != message.message_id and box.pop(older, None) is not None:
                    self._sizes.pop((device_id, older))
                    replaced.append(older)
                keys[message.collapse_key] = message.message_id
            box[message.message_id] = message
            while len(box) > self.max_per_device:
                # Bounded: the oldest entry goes first, as with a full Redis inbox.
                self._sizes.pop((device_id, next(iter(box))))
                del box[next(iter(box))]
            # Last: an eviction it causes may empty this very box (of older messages only).
            self._sizes.put((device_id, message.message_id), None, size)
        return replaced

    async def ack(self, device_id: str, message_ids: Sequence[str]) -> list[str]:
        box = self._boxes.get(device_id, {})
        removed = []
        for message_id in message_ids:
            message = box.pop(message_id, None)
            if message is not None:
                removed.append(message_id)
                self._sizes.pop((device_id, message_id))
                self._forget_collapse(device_id, message)
        if not box:
            self._drop_box(device_id)
        return removed

    async def pending(self, device_id: str, limit: int = 1000) -> list[message_pb2.Message]:
        box = self._boxes.get(device_id, {})
        now = now_ms()
        expired = [m for m in box.values() if is_expired(m, now)]
        for message in expired:
            del box[message.message_id]
            self._sizes.pop((device_id, message.message_id))
            self._forget_collapse(device_id, message)
        if not box:
            self._drop_box(device_id)
        if expired:
            DROPPED.labels("expired").inc(len(expired))
        return list(box.values())[:limit]

    async def size(self, device_id: str) -> int:
        return len(await self.pending(device_id, limit=self.max_per_device))

    async def enroll(self, user_id: str, device_id: str, ttl_seconds: float) -> str | None:
        now = time.monotonic()
        held = self._owners.get(device_id)
        if held is not None and held[1] > now and held[0] != user_id:
            return held[0]
        if held is not None and held[0] != user_id:
            self._forget_user_device(held[0], device_id)
        self._owners[device_id] = (user_id, now + ttl_seconds)
        self._owners.move_to_end(device_id)
        while self._owners:
            oldest = next(iter(self._owners.values()))
            if oldest[1] > now and len(self._owners) <= self.max_devices:
                break
            if oldest[1] > now:
                LIMITS_HIT.labels("inbox_devices").inc()
            gone, (owner, _) = self._owners.popitem(last=False)
            self._forget_user_device(owner, gone)
        self._users.setdefault(user_id, {})[device_id] = now + ttl_seconds
        return None

    async def devices_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        now = time.monotonic()
        return {
            user_id: [d for d, expires in self._users.get(user_id, {}).items() if expires > now] for user_id in user_ids
        }

    def _forget_collapse(self, device_id: str, message: message_pb2.Message) -> None:
        keys = self._collapse.get(device_id)
        if keys and message.collapse_key and keys.get(message.collapse_key) == message.message_id:
            del keys[message.collapse_key]

    def _evicted(self, key: tuple[str, str], _: None) -> None:
        device_id, message_id = key
        box = self._boxes.get(device_id)
        message = box.pop(message_id, None) if box is not None else None
        if message is not None:
            self._forget_collapse(device_id, message)
        if not box:
            self._drop_box(device_id)

    def _drop_box(self, device_id: str) -> None:
        self._boxes.pop(device_id, None)
        self._collapse.pop(device_id, None)

    def _forget_user_device(self, user_id: str, device_id: str) -> None:
        devices = self._users.get(user_id)
        if devices is not None:
            devices.pop(device_id, None)
            if not devices:
                del self._users[user_id]
