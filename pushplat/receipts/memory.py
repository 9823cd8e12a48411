"""In-process receipts for the embedded platform: a bounded status table and a recent-events ring."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

from pushplat_client.v1 import push_pb2

from pushplat.receipts.base import Receipts, merge_status


class MemoryReceipts(Receipts):
    # Bounded: about 4-5 KiB per tracked message, so `pushplat dev` stays small under load.
    def __init__(self, max_messages: int = 20_000, max_events: int = 10_000) -> None:
        self.max_messages = max_messages
        # message id -> (status, the sender its ACCEPTED receipt named)
        self._status: OrderedDict[str, tuple[push_pb2.GetStatusResponse, str]] = OrderedDict()
        self.events: deque[push_pb2.Receipt] = deque(maxlen=max_events)

    async def _emit(self, receipts: Sequence[push_pb2.Receipt]) -> None:
        for r in receipts:
            self.events.append(r)
            entry = self._status.get(r.message_id)
            if entry is None:
                entry = self._status[r.message_id] = (push_pb2.GetStatusResponse(), r.sender_id)
                while len(self._status) > self.max_messages:
                    self._status.popitem(last=False)
            elif r.sender_id and not entry[1]:
                entry = self._status[r.message_id] = (entry[0], r.sender_id)
            merge_status(entry[0], r)

    async def status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        entry = self._status.get(message_id)
        if entry is None or entry[1] != sender_id:
            return None
        return push_pb2.GetStatusResponse.FromString(entry[0].SerializeToString())
