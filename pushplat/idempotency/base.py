"""Idempotent sends: the first Send with a key claims it; repeats within the window get its id."""

from __future__ import annotations

from abc import ABC, abstractmethod


class IdempotencyUnavailable(Exception):
    """The idempotency store cannot be reached."""


class IdempotencyStore(ABC):
    @abstractmethod
    async def claim(self, key: str, message_id: str, window_seconds: float) -> str | None:
        """Claim key for message_id; None if claimed now, else the message_id that holds it."""

    @abstractmethod
    async def release(self, key: str, message_id: str) -> None:
        """Undo a claim whose message was not enqueued, so a retry is not reported a duplicate."""

    async def close(self) -> None:
        return None
