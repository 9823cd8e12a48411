"""GrpcEdgeLink: pooled gRPC channels to edges' Delivery service (routers, and edges evicting on
other edges), carrying the internal credentials on every call."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from pushplat.edge_link.base import EdgeLink, RoutedItem
from pushplat.internal_auth import InternalAuth
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class GrpcEdgeLink(EdgeLink):
    def __init__(self, timeout_seconds: float, auth: InternalAuth | None = None) -> None:
        self.timeout_seconds = timeout_seconds
        auth = auth or InternalAuth()
        self._credentials = auth.channel_credentials()
        self._options = [*CHANNEL_OPTIONS, *auth.channel_options()]
        self._metadata = auth.call_metadata or None
        self._stubs: dict[str, tuple[grpc.aio.Channel, delivery_pb2_grpc.DeliveryStub]] = {}

    def _stub(self, address: str) -> delivery_pb2_grpc.DeliveryStub:
        entry = self._stubs.get(address)
        if entry is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(address, self._credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(address, options=self._options)
            entry = (channel, delivery_pb2_grpc.DeliveryStub(channel))
            self._stubs[address] = entry
        return entry[1]

    async def deliver(self, edge_id: str, address: str, items: Sequence[RoutedItem]) -> list[int]:
        request = delivery_pb2.DeliverRequest(edge_id=edge_id)
        add = request.items.add
        for item in items:  # the one copy of each message: into the request that is sent
            routed = add(device_id=item.device_id, session_id=item.session_id, message=item.message)
            if item.topic:
                routed.topic = item.topic
            elif item.topic_change.version:
                routed.topic_change.CopyFrom(item.topic_change)
        response = await self._stub(address).Deliver(request, timeout=self.timeout_seconds, metadata=self._metadata)
        return list(response.outcomes)

    async def evict(self, edge_id: str, address: str, request: delivery_pb2.EvictRequest) -> bool:
        reply = await self._stub(address).Evict(request, timeout=self.timeout_seconds, metadata=self._metadata)
        return reply.evicted

    async def forget(self, address: str) -> None:
        entry = self._stubs.pop(address, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()
