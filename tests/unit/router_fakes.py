"""Stand-ins for the router's neighbours in unit tests: edges that answer, die or hang, and a lane
consumer with Kafka-like positions that records its commits. (Unit tests only: the integration
and fault tests run the real thing.)"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Sequence

from pushplat_client.v1 import message_pb2

from pushplat.config import Config
from pushplat.edge_link import EdgeLink, RoutedItem
from pushplat.inbox.memory import MemoryInbox
from pushplat.queue import LaneConsumer, Record
from pushplat.receipts.memory import MemoryReceipts
from pushplat.registry.memory import MemoryRegistry
from pushplat.router import RouterNode
from pushplat.v1 import delivery_pb2

QUEUED = delivery_pb2.DeliverResponse.Outcome.QUEUED


class Edges(EdgeLink):
    """Edges by id: healthy ones record what they get; `dead` ones refuse at once; `hung` ones
    never answer (until released)."""

    def __init__(self) -> None:
        self.delivered: defaultdict[str, list[str]] = defaultdict(list)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.most_in_flight: defaultdict[str, int] = defaultdict(int)
        self.dead: set[str] = set()
        self.hung: set[str] = set()
        self.released = asyncio.Event()

    async def deliver(self, edge_id: str, address: str, items: Sequence[RoutedItem]) -> list[int]:
        self.calls[edge_id] += 1
        if edge_id in self.dead:
            raise ConnectionError(f"edge {edge_id} is dead")
        self.in_flight[edge_id] += 1
        self.most_in_flight[edge_id] = max(self.most_in_flight[edge_id], self.in_flight[edge_id])
        try:
            while edge_id in self.hung:
                self.released.clear()
                await self.released.wait()
        finally:
            self.in_flight[edge_id] -= 1
        self.delivered[edge_id] += [item.message.message_id for item in items]
        return [QUEUED] * len(items)

    def release(self, edge_id: str) -> None:
        self.hung.discard(edge_id)
        self.released.set()

    async def evict(self, edge_id: str, address: str, request: delivery_pb2.EvictRequest) -> bool:
        return False


class Lanes(LaneConsumer):
    """A lane consumer whose records have Kafka-like positions (lane, partition, offset)."""

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.waiting: list[Record] = []
        self.offsets: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.committed: dict[tuple[str, int], int] = {}
        self.ready = asyncio.Event()

    def publish(self, envelope: delivery_pb2.Envelope, lane: str = "normal", partition: int = 0) -> Record:
        offset = self.offsets[(lane, partition)]
        self.offsets[(lane, partition)] += 1
        record = Record(lane, envelope, (lane, partition, offset))
        self.waiting.append(record)
        self.ready.set()
        return record

    async def fetch(self, lanes: Collection[str], max_records: int, timeout: float) -> list[Record]:
        if not self.waiting:
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return []
        taken = [r for r in self.waiting if r.lane in lanes][:max_records]
        self.waiting = [r for r in self.waiting if r not in taken]
        return taken

    async def commit(self, records: Sequence[Record]) -> None:
        for record in records:
            lane, partition, offset = record.position
            key = (lane, partition)
            # As Kafka: the committed offset is the next one to read, and never goes back.
            self.committed[key] = max(self.committed.get(key, 0), offset + 1)


def message(message_id: str, *, at_least_once: bool = True, payload: bytes = b"x") -> message_pb2.Message:
    return message_pb2.Message(message_id=message_id, payload=payload, requires_ack=at_least_once)


def to_device(device_id: str, message_id: str, **kwargs: object) -> delivery_pb2.Envelope:
    return delivery_pb2.Envelope(device_id=device_id, message=message(message_id, **kwargs))


def to_user(user_id: str, message_id: str, **kwargs: object) -> delivery_pb2.Envelope:
    return delivery_pb2.Envelope(user_id=user_id, message=message(message_id, **kwargs))


def router(
    lanes: LaneConsumer,
    edges: Edges,
    registry: MemoryRegistry | None = None,
    inbox: MemoryInbox | None = None,
    **config: object,
) -> RouterNode:
    settings = {"deliver_timeout_seconds": 0.2, "edge_breaker_open_seconds": 0.2, **config}
    return RouterNode(
        Config(**settings),  # type: ignore[arg-type]
        registry or MemoryRegistry(),
        lanes,
        inbox or MemoryInbox(),
        MemoryReceipts(),
        edges,
    )
