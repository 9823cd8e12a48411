"""Idempotent sends: the first Send with a key claims it; repeats within the window get its id.

Keys are scoped to the sender (the API-key identity): two senders' ``order-1`` are two keys.
A claim remembers a fingerprint of the request, so a repeat can be told from a different
request that reuses the key (the api answers ALREADY_EXISTS for those).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple


class IdempotencyUnavailable(Exception):
    """The idempotency store cannot be reached."""


class Claim(NamedTuple):
    """Who holds a key: the message id it was claimed for and its request's fingerprint."""

    message_id: str
    fingerprint: str

    def encode(self) -> str:
        return f"{self.fingerprint} {self.message_id}"

    @classmethod
    def decode(cls, value: str) -> Claim:
        fingerprint, _, message_id = value.partition(" ")
        return cls(message_id, fingerprint)


def scoped(sender: str, key: str) -> str:
    """One string per (sender, key), unambiguous whatever either contains."""
    return f"{len(sender)}:{sender}:{key}"


class IdempotencyStore(ABC):
    @abstractmethod
    async def claim(self, sender: str, key: str, claim: Claim, window_seconds: float) -> Claim | None:
        """Claim the sender's key; None if claimed now, else the claim that holds it."""

    @abstractmethod
    async def release(self, sender: str, key: str, claim: Claim) -> None:
        """Undo a claim whose message was not enqueued, so a retry is not reported a duplicate."""

    async def claim_many(
        self, sender: str, claims: Sequence[tuple[str, Claim]], window_seconds: float
    ) -> list[Claim | None]:
        """claim() for each (key, claim) in order, as one operation where the store allows (a
        SendBatch claims all its keys in one round trip); a later repeat of a key sees the earlier claim."""
        return [await self.claim(sender, key, claim, window_seconds) for key, claim in claims]

    async def release_many(self, sender: str, claims: Sequence[tuple[str, Claim]]) -> None:
        for key, claim in claims:
            await self.release(sender, key, claim)

    async def close(self) -> None:
        return None
