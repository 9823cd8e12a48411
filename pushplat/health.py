"""grpc's health service, bounded: every gRPC port serves it to anyone, without credentials."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2

from pushplat.logs import clip
from pushplat.metrics import LIMITS_HIT

# Watch streams open at once per port. Each stays open until the client leaves (about 21 KiB:
# the call and its condition), so without a cap anyone could hold memory for free. Load
# balancers and client-side health checks hold one per channel; probes use Check.
MAX_HEALTH_WATCHES = 1_000


class BoundedHealthServicer(health.aio.HealthServicer):
    """At most MAX_HEALTH_WATCHES Watch streams; Check of an unknown service names the known ones."""

    def __init__(self) -> None:
        super().__init__()
        self._services: set[str] = set()
        self._watches = 0

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        if service:
            self._services.add(service)
        await super().set(service, status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service and request.service not in self._services:
            known = ", ".join(sorted(self._services)) or "only the server as a whole (service '')"
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown service {clip(request.service)!r}; this port serves {known}"
            )
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        if self._watches >= MAX_HEALTH_WATCHES:
            LIMITS_HIT.labels("health_watches").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{MAX_HEALTH_WATCHES} Health.Watch streams are open on this port; "
                "poll Health.Check instead, or retry later",
            )
        self._watches += 1
        try:
            await super().Watch(request, context)
        finally:
            self._watches -= 1
