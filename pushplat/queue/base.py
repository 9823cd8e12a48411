"""Priority lanes between the api and the routers: one lane per priority (high, normal, low).

Producers publish Envelopes; consumers fetch Records from the lanes they ask for and commit
them once the router has handed them to an edge (or dropped them for want of a route).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushplat.v1 import delivery_pb2


class QueueUnavailable(Exception):
    """The lanes cannot take or give messages right now."""


@dataclass
class Record:
    lane: str
    envelope: delivery_pb2.Envelope
    # Where the backend keeps it (e.g. Kafka partition and offset), for commit.
    position: Any = field(default=None)


def target_key(envelope: delivery_pb2.Envelope) -> str:
    """Partition key: one target's messages share a partition and so stay in order."""
    which = envelope.WhichOneof("target")
    return f"{which}:{getattr(envelope, which)}" if which else ""


class LaneProducer(ABC):
    async def start(self) -> None:
        """Connect; raise QueueUnavailable with a clear message if the backend is unreachable."""

    async def publish(self, lane: str, envelope: delivery_pb2.Envelope) -> None:
        """Return once the envelope is durably in the lane; raise QueueUnavailable otherwise."""
        error = (await self.publish_many(lane, [envelope]))[0]
        if error is not None:
            raise error

    @abstractmethod
    async def publish_many(
        self, lane: str, envelopes: Sequence[delivery_pb2.Envelope]
    ) -> list[QueueUnavailable | None]:
        """Publish envelopes to one lane, in order, in as few hops as the backend allows.
        Per envelope: None once it is durably in the lane, else what kept it out. Never raises
        QueueUnavailable: a backend that is down fails every envelope."""

    async def close(self) -> None:
        return None


class LaneConsumer(ABC):
    async def start(self) -> None:
        """Connect and join the consumer group."""

    @abstractmethod
    async def fetch(self, lanes: Collection[str], max_records: int, timeout: float) -> list[Record]:
        """Up to max_records from the given lanes, each lane in order; waits up to timeout."""

    @abstractmethod
    async def commit(self, records: Sequence[Record]) -> None:
        """Mark records as done so they are not redelivered."""

    async def keep_alive(self) -> None:
        """Called on every turn of a router's loop, also while it fetches nothing (at its
        in-flight cap, or retrying a failed batch): a queue whose group membership needs
        regular polls gets them here. Cheap when nothing is due."""
        return None

    async def close(self) -> None:
        return None
