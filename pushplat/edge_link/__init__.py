"""Router-to-edge hand-off: one interface (base.py), in process (local.py) or over gRPC (remote.py)."""

from pushplat.edge_link.base import DeliveryHandler, EdgeLink, RoutedItem
from pushplat.edge_link.local import LOCAL_ADDRESS, LocalEdgeLink
from pushplat.edge_link.remote import GrpcEdgeLink

__all__ = ["LOCAL_ADDRESS", "DeliveryHandler", "EdgeLink", "GrpcEdgeLink", "LocalEdgeLink", "RoutedItem"]
