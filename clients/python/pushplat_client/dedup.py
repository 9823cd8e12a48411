"""Bounded memory of recently seen message ids."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["RecentIds"]


class RecentIds:
    """An LRU set of message ids with a fixed capacity.

    Redeliveries (inbox replay after a reconnect, a retry across edges) arrive close to the
    original, so remembering the most recent ids catches them without growing forever.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"RecentIds capacity must be >= 1, got {capacity!r}")
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    def seen(self, message_id: str) -> bool:
        """True if ``message_id`` was seen before; otherwise remember it and return False."""
        if message_id in self._ids:
            # A hit counts as use: an id that keeps coming back should not be evicted.
            self._ids.move_to_end(message_id)
            return True
        self.add(message_id)
        return False

    def add(self, message_id: str) -> None:
        """Remember ``message_id`` (as the most recent), evicting the oldest beyond capacity."""
        self._ids[message_id] = None
        self._ids.move_to_end(message_id)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def discard(self, message_id: str) -> None:
        """Forget ``message_id``, so that a redelivery of it counts as new."""
        self._ids.pop(message_id, None)

    def __contains__(self, message_id: object) -> bool:
        # Membership test only; does not refresh recency.
        return message_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def clear(self) -> None:
        self._ids.clear()
