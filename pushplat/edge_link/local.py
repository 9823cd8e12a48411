"""LocalEdgeLink: the router and the edge share one process (``pushplat dev``), so a batch is a
function call: no Delivery port, no serialization, no gRPC round trip."""

from __future__ import annotations

from collections.abc import Sequence

from pushplat.edge_link.base import DeliveryHandler, EdgeLink, RoutedItem
from pushplat.v1 import delivery_pb2

# What the in-process edge publishes as its address in the registry: there is no port.
LOCAL_ADDRESS = "in-process"


class LocalEdgeLink(EdgeLink):
    def __init__(self, edge: DeliveryHandler | None = None) -> None:
        self._edge = edge

    def attach(self, edge: DeliveryHandler) -> None:
        """The edge is built with its link, so it joins after."""
        self._edge = edge

    @property
    def edge(self) -> DeliveryHandler:
        if self._edge is None:
            raise RuntimeError("LocalEdgeLink used before an edge was attached")
        return self._edge

    async def deliver(self, edge_id: str, address: str, items: Sequence[RoutedItem]) -> list[int]:
        # The handler itself answers NO_SESSION for an edge id that is not its own (a stale route).
        return self.edge.deliver(edge_id, items)

    async def evict(self, edge_id: str, address: str, request: delivery_pb2.EvictRequest) -> bool:
        return self.edge.evict(request)
