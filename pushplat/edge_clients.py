"""EdgeClients: pooled gRPC channels to edges' internal Delivery service (used by routers and edges)."""

from __future__ import annotations

import grpc

from pushplat.v1 import delivery_pb2, delivery_pb2_grpc


class EdgeClients:
    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._stubs: dict[str, tuple[grpc.aio.Channel, delivery_pb2_grpc.DeliveryStub]] = {}

    def _stub(self, address: str) -> delivery_pb2_grpc.DeliveryStub:
        entry = self._stubs.get(address)
        if entry is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ],
            )
            entry = (channel, delivery_pb2_grpc.DeliveryStub(channel))
            self._stubs[address] = entry
        return entry[1]

    async def deliver(self, address: str, request: delivery_pb2.DeliverRequest) -> delivery_pb2.DeliverResponse:
        return await self._stub(address).Deliver(request, timeout=self.timeout_seconds)

    async def evict(self, address: str, request: delivery_pb2.EvictRequest) -> delivery_pb2.EvictResponse:
        return await self._stub(address).Evict(request, timeout=self.timeout_seconds)

    async def forget(self, address: str) -> None:
        entry = self._stubs.pop(address, None)
        if entry is not None:
            await entry[0].close()

    async def close(self) -> None:
        for channel, _ in self._stubs.values():
            await channel.close()
        self._stubs.clear()
