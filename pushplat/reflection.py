"""Server reflection that also resolves method names (grpcurl describe pkg.Service.Method, ghz).

grpcio-reflection answers file_containing_symbol with DescriptorPool.FindFileContainingSymbol,
and protobuf's upb backend (the default) finds services, messages, fields and enums there but not
methods (grpc/grpc#34743). A method lives in its service's file, so look the service up instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from pushplat.metrics import LIMITS_HIT

# Reflection streams open at once per port. Tools (grpcurl, ghz, Postman) hold one for the
# length of a command; with no cap, anyone could hold them open for good, about 7 KiB each.
MAX_REFLECTION_STREAMS = 100


class MethodAwarePool:
    """A DescriptorPool whose FindFileContainingSymbol also knows `package.Service.Method`."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method = symbol.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                service = None
            if service is None or method not in service.methods_by_name:
                raise
            return service.file


class BoundedReflectionServicer(reflection.aio.ReflectionServicer):
    """At most MAX_REFLECTION_STREAMS ServerReflectionInfo streams open at once."""

    def __init__(self, service_names: Iterable[str], pool: Any) -> None:
        super().__init__(list(service_names), pool=pool)
        self._open = 0

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        if self._open >= MAX_REFLECTION_STREAMS:
            LIMITS_HIT.labels("reflection_streams").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_REFLECTION_STREAMS} reflection streams are open on this port; close one or retry later",
            )
        self._open += 1
        try:
            async for response in super().ServerReflectionInfo(request_iterator, context):
                yield response
        finally:
            self._open -= 1


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve grpc.reflection.v1alpha for service_names (plus reflection itself) on server."""
    servicer = BoundedReflectionServicer(
        [*service_names, reflection.SERVICE_NAME], pool=MethodAwarePool(descriptor_pool.Default())
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
