"""EdgeLink: how a router hands a batch to an edge, and how an edge evicts a session on another.

The router and the edge's registration code talk only to this interface. ``local.py`` calls
the edge in the same process (``pushplat dev``: no port, no serialization); ``remote.py``
calls the edge's Delivery service over gRPC, with the internal credentials.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from pushplat_client.v1 import message_pb2

from pushplat.v1 import delivery_pb2


class RoutedItem(Protocol):
    """One message for one device session: a delivery_pb2.Routed, or any object with its fields
    (the router's own deliveries, handed over in process without a protobuf copy)."""

    @property
    def device_id(self) -> str: ...

    @property
    def session_id(self) -> str: ...

    @property
    def message(self) -> message_pb2.Message: ...

    @property
    def topic(self) -> str: ...

    @property
    def topic_change(self) -> delivery_pb2.TopicChange: ...


class DeliveryHandler(Protocol):
    """What an edge offers to links: the Delivery service without the transport."""

    def deliver(self, edge_id: str, items: Sequence[RoutedItem]) -> list[int]: ...

    def evict(self, request: delivery_pb2.EvictRequest) -> bool: ...


class EdgeLink(ABC):
    @abstractmethod
    async def deliver(self, edge_id: str, address: str, items: Sequence[RoutedItem]) -> list[int]:
        """Queue items on the edge's device streams; one DeliverResponse.Outcome per item, in
        order. Raises if the edge cannot be reached."""

    @abstractmethod
    async def evict(self, edge_id: str, address: str, request: delivery_pb2.EvictRequest) -> bool:
        """End one session on that edge (a newer connection replaced it); False if it was gone."""

    async def close(self) -> None:
        """Release connections."""
