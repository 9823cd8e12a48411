"""Receipts: every step of a message's life as an event, and the last state per device.

Events go to a sink (memory, or Kafka topic <prefix>.receipts); the last state per
(message, device) goes to a status store that Push.GetStatus reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from pushplat_client.v1 import push_pb2

from pushplat.messages import now_ms
from pushplat.metrics import LabelMetrics

State = push_pb2.DeliveryState
# States counted per label, with the metric's name for each.
COUNTED_FOR_LABELS = {State.DELIVERY_STATE_DELIVERED_TO_EDGE: "delivered_to_edge", State.DELIVERY_STATE_ACKED: "acked"}


def receipt(
    message_id: str,
    state: int,
    *,
    device_id: str = "",
    user_id: str = "",
    edge_id: str = "",
    labels: Mapping[str, str] | None = None,
    detail: str = "",
    sender_id: str = "",
) -> push_pb2.Receipt:
    return push_pb2.Receipt(
        sender_id=sender_id,
        message_id=message_id,
        state=state,
        device_id=device_id,
        user_id=user_id,
        edge_id=edge_id,
        at_ms=now_ms(),
        labels=labels or {},
        detail=detail,
    )


class Receipts(ABC):
    # Which labels are counted in metrics; open_receipts sets the operator's choice.
    label_metrics: LabelMetrics = LabelMetrics()

    async def start(self) -> None:
        return None

    async def emit(self, receipts: Sequence[push_pb2.Receipt]) -> None:
        """Publish events and record the last states. Never raises: receipts are best effort."""
        if self.label_metrics.keys:
            for r in receipts:
                counted_as = COUNTED_FOR_LABELS.get(r.state)
                if counted_as and r.labels:
                    self.label_metrics.count(counted_as, r.labels)
        await self._emit(receipts)

    @abstractmethod
    async def _emit(self, receipts: Sequence[push_pb2.Receipt]) -> None: ...

    @abstractmethod
    async def status(self, message_id: str, sender_id: str) -> push_pb2.GetStatusResponse | None:
        """The last known state of the message and of each device; None if unknown, or if
        sender_id is not the sender that the message's ACCEPTED receipt named."""

    async def close(self) -> None:
        return None


def merge_status(response: push_pb2.GetStatusResponse, r: push_pb2.Receipt) -> None:
    """Fold one receipt into a status response (the shared rule for every backend)."""
    if not response.message_id:
        response.message_id = r.message_id
    if r.labels and not response.labels:
        response.labels.update(r.labels)
    response.state = r.state
    if not r.device_id:
        return
    for device in response.devices:
        if device.device_id == r.device_id:
            if device.state == State.DELIVERY_STATE_ACKED and r.state != State.DELIVERY_STATE_ACKED:
                return  # an ack is final: a late duplicate delivery does not undo it
            device.state, device.updated_at_ms = r.state, r.at_ms
            device.edge_id, device.detail = r.edge_id or device.edge_id, r.detail
            return
    response.devices.add(
        device_id=r.device_id, state=r.state, updated_at_ms=r.at_ms, edge_id=r.edge_id, detail=r.detail
    )
