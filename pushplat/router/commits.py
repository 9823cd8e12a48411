"""CommitTracker: which lane positions a router may commit while deliveries finish out of order.

Every record is tracked from its fetch to its commit as an Entry. An entry is done once each
delivery it fanned out to is settled (handed to its edge, failed with the message safely in
the inbox, or dropped for want of a route). Commits are cumulative per partition, so a router
may commit a partition only up to its lowest record not yet done: a slow edge holding one
record holds back the commit of every later record of that partition (they are delivered
again after a crash; the SDKs drop the duplicates), never the delivery of other edges' records.

Positions are tuples whose last element is the offset and whose other elements name the
partition, e.g. Kafka's (topic, partition, offset). Records without a position (the
in-process lanes) are counted but never committed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

from pushplat.queue import Record
from pushplat.v1 import delivery_pb2

# What a commit marker carries: commit() reads only the position.
_NO_ENVELOPE = delivery_pb2.Envelope()


class Entry:
    """One record between its fetch and its commit."""

    __slots__ = ("done", "lane", "partition", "pending", "position", "record")

    def __init__(self, record: Record, partition: Hashable | None) -> None:
        self.lane = record.lane
        self.record: Record | None = record
        self.position: Any = record.position
        self.partition = partition
        self.pending = 0  # deliveries not yet settled
        self.done = False


class CommitTracker:
    def __init__(self) -> None:
        # Per partition, entries in fetch order; the front is the oldest one not yet committable.
        self._partitions: dict[Hashable, deque[Entry]] = {}
        # Per partition, the newest entry that everything before it (in fetch order) is done.
        self._ready: dict[Hashable, Entry] = {}
        self.size = 0  # entries between fetch and commit (done ones waiting behind a slow one too)
        self.open = 0  # entries handed to edges whose deliveries are not all settled yet
        self.progress = asyncio.Event()  # set whenever an entry is done (the committer waits on it)
        self.released = asyncio.Event()  # set whenever entries leave (the fetch loop waits on it)

    def track(self, records: Iterable[Record]) -> list[Entry]:
        entries = []
        for record in records:
            position = record.position
            partition = position[:-1] if position is not None else None
            entry = Entry(record, partition)
            if partition is not None:
                queue = self._partitions.get(partition)
                if queue is None:
                    queue = self._partitions[partition] = deque()
                queue.append(entry)
            entries.append(entry)
        self.size += len(entries)
        return entries

    def expect(self, entry: Entry, deliveries: int) -> None:
        """The entry went to edges as this many deliveries; settle() each of them."""
        entry.pending = deliveries
        self.open += 1

    def settle(self, entry: Entry) -> None:
        """One of the entry's deliveries is settled; the last one makes it done."""
        entry.pending -= 1
        if entry.pending == 0:
            self.open -= 1
            self.finish(entry)

    def finish(self, entry: Entry) -> None:
        if entry.done:
            return
        entry.done = True
        entry.record = None  # the payload is no longer needed, only the position
        self.progress.set()
        if entry.partition is None:
            self.size -= 1
            self.released.set()
            return
        queue = self._partitions[entry.partition]
        last = None
        while queue and queue[0].done:
            last = queue.popleft()
            self.size -= 1
        if last is not None:
            self.released.set()
        if not queue:
            del self._partitions[entry.partition]
        if last is not None:
            ready = self._ready.get(entry.partition)
            if ready is None or ready.position[-1] < last.position[-1]:
                self._ready[entry.partition] = last

    def committable(self) -> list[Record]:
        """One marker record per partition that may be committed up to it (and including it)."""
        if not self._ready:
            return []
        markers = [Record(entry.lane, _NO_ENVELOPE, entry.position) for entry in self._ready.values()]
        self._ready.clear()
        return markers

    def requeue(self, markers: list[Record]) -> None:
        """A commit failed: offer these positions again with the next one."""
        for marker in markers:
            partition = marker.position[:-1]
            ready = self._ready.get(partition)
            if ready is None or ready.position[-1] < marker.position[-1]:
                entry = Entry(marker, partition)
                entry.done = True
                entry.record = None
                self._ready[partition] = entry
