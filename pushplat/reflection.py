"""Server reflection that also resolves method names (grpcurl describe pkg.Service.Method, ghz).

grpcio-reflection answers file_containing_symbol with DescriptorPool.FindFileContainingSymbol,
and protobuf's upb backend (the default) finds services, messages, fields and enums there but not
methods (grpc/grpc#34743). A method lives in its service's file, so look the service up instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection


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


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve grpc.reflection.v1alpha for service_names (plus reflection itself) on server."""
    reflection.enable_server_reflection(
        [*service_names, reflection.SERVICE_NAME], server, pool=MethodAwarePool(descriptor_pool.Default())
    )
