"""The inbox: store-and-forward for at-least-once messages, per device.

A message is put in each target device's inbox before it is pushed, and leaves when the
device acks it or its TTL runs out. On every (re)connect the edge replays what is left,
oldest first. A newer message with the same (device, collapse_key) replaces the older one.
The inbox also remembers which devices a user has, so a message to a user reaches the
devices that are offline at send time, and which user each device belongs to: a device id is
bound to the first user that enrolls it, until it has not connected for the memory window, and
no other user may enroll it (or read its inbox) meanwhile.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from pushplat_client.v1 import message_pb2


class InboxUnavailable(Exception):
    """The inbox backend cannot be reached or failed."""


class Collapsed(NamedTuple):
    """An older message that a newer one with the same collapse key replaced on a device."""

    message_id: str
    replaced_by: str
    device_id: str


class Inbox(ABC):
    @abstractmethod
    async def put(self, device_ids: Sequence[str], message: message_pb2.Message) -> list[str]:
        """Store message for each device; return the ids of older messages it collapsed."""

    async def put_many(self, entries: Sequence[tuple[Sequence[str], message_pb2.Message]]) -> list[Collapsed]:
        """put() for several messages, in order, saying which device each collapse happened on.
        Backends override it to save round trips."""
        replaced: list[Collapsed] = []
        for device_ids, message in entries:
            for device_id in dict.fromkeys(device_ids):
                replaced += [
                    Collapsed(old, message.message_id, device_id) for old in await self.put([device_id], message)
                ]
        return replaced

    @abstractmethod
    async def ack(self, device_id: str, message_ids: Sequence[str]) -> list[str]:
        """Remove acked messages; return the ids that were there."""

    async def ack_many(self, entries: Sequence[tuple[str, Sequence[str]]]) -> list[list[str]]:
        """ack() for several devices at once: the ids removed, per (device, ids) entry. Backends
        override it to save round trips."""
        return [await self.ack(device_id, message_ids) for device_id, message_ids in entries]

    @abstractmethod
    async def pending(self, device_id: str, limit: int = 1000) -> list[message_pb2.Message]:
        """Unacked, unexpired messages, oldest first."""

    @abstractmethod
    async def size(self, device_id: str) -> int: ...

    @abstractmethod
    async def enroll(self, user_id: str, device_id: str, ttl_seconds: float) -> str | None:
        """Bind device to user for ttl_seconds (refreshed on every connect) and add it to the
        user's devices. If another user holds the device, change nothing and return that user."""

    @abstractmethod
    async def devices_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """Every enrolled device of each user, connected or not."""

    async def close(self) -> None:
        return None
