"""The server lifecycle: open the stores, start each role's gRPC server, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, push_pb2, push_pb2_grpc

from pushplat.api import PushServicer
from pushplat.config import ROLES, Config
from pushplat.edge import EdgeNode
from pushplat.idempotency import IdempotencyStore, open_idempotency
from pushplat.inbox import Inbox, open_inbox
from pushplat.logs import kv
from pushplat.metrics import serve_metrics
from pushplat.queue import LaneConsumer, LaneProducer, check_queue_url
from pushplat.receipts import Receipts, open_receipts
from pushplat.registry import Registry, open_registry
from pushplat.router import RouterNode
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc

log = logging.getLogger("pushplat.server")

# Keepalive kills half-open TCP connections; the heartbeat catches silent clients.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
    # grpc-core cancels calls (CANCELLED, no hint) once ~1,000 wait for the application; a
    # reconnect storm easily exceeds that. Let them queue, and shed load in AdmissionControl
    # instead, with RESOURCE_EXHAUSTED and a retry hint.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 50_000),
]


class StartupError(Exception):
    """The server cannot start: a port is taken or a backend is unreachable."""


@dataclass
class Ports:
    edge: int = 0
    api: int = 0
    delivery: int = 0


@dataclass
class Server:
    """Runs the roles named in config.roles in this process."""

    config: Config
    ports: Ports = field(default_factory=Ports)

    def __post_init__(self) -> None:
        self.registry: Registry | None = None
        self.inbox: Inbox | None = None
        self.idempotency: IdempotencyStore | None = None
        self.receipts: Receipts | None = None
        self.producer: LaneProducer | None = None
        self.consumer: LaneConsumer | None = None
        self.edge: EdgeNode | None = None
        self.router: RouterNode | None = None
        self._servers: list[grpc.aio.Server] = []
        self._health: list[health.aio.HealthServicer] = []
        self._stopped = asyncio.Event()
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        config = self.config
        roles = set(config.roles)
        try:
            self.producer, self.consumer = _open_lanes(config, roles)
            if self.producer is not None:
                await self.producer.start()
            if config.registry.startswith("memory:") and roles != set(ROLES):
                raise StartupError(
                    "--registry memory:// only works when edge and router run in one process "
                    "(pushplat dev); use --registry redis://host:port/db for separate roles"
                )
            self.registry = open_registry(config.registry)
            await self.registry.ping()
            # The inbox, idempotency keys and message status live beside the registry.
            self.inbox = open_inbox(config.registry)
            self.idempotency = open_idempotency(config.registry)
            self.receipts = open_receipts(config)
            await self.receipts.start()
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(f"cannot open backends: {exc}") from exc

        if "edge" in roles:
            self.edge = EdgeNode(config, self.registry, self.inbox, self.receipts)
            delivery_server = self._new_server()
            delivery_pb2_grpc.add_DeliveryServicer_to_server(self.edge.delivery, delivery_server)
            self.ports.delivery = self._bind(delivery_server, config.delivery_port, "delivery")
            await self._serve_meta(delivery_server, [delivery_pb2.DESCRIPTOR.services_by_name["Delivery"].full_name])
            edge_server = self._new_server()
            edge_pb2_grpc.add_EdgeServicer_to_server(self.edge.servicer, edge_server)
            self.ports.edge = self._bind(edge_server, config.edge_port, "edge")
            await self._serve_meta(edge_server, [edge_pb2.DESCRIPTOR.services_by_name["Edge"].full_name])
        if "api" in roles:
            api_server = self._new_server()
            push = PushServicer(
                config, self.producer, idempotency=self.idempotency, receipts=self.receipts, registry=self.registry
            )
            push_pb2_grpc.add_PushServicer_to_server(push, api_server)
            self.ports.api = self._bind(api_server, config.api_port, "api")
            await self._serve_meta(api_server, [push_pb2.DESCRIPTOR.services_by_name["Push"].full_name])
        if "router" in roles:
            self.router = RouterNode(config, self.registry, self.consumer, self.inbox, self.receipts)

        if self.edge:
            await self.edge.start(f"{advertised_host(config)}:{self.ports.delivery}")
        if self.router:
            try:
                await self.router.start()
            except Exception as exc:
                raise StartupError(f"cannot start the router: {exc}") from exc
        for server in self._servers:
            await server.start()
        serve_metrics(config.host, config.metrics_port)
        log.info(
            kv(
                "server.started",
                roles=",".join(sorted(roles)),
                edge_id=config.edge_id,
                edge_port=self.ports.edge or None,
                api_port=self.ports.api or None,
                delivery_port=self.ports.delivery or None,
                registry=config.registry,
                queue=config.queue,
                metrics_port=config.metrics_port or None,
            )
        )
        off = []
        if "edge" in roles and not config.auth_enabled:
            off.append("no --auth-secret, so Hello.user_id and Hello.device_id are trusted as sent")
        if "api" in roles and not config.api_keys:
            off.append("no --api-key, so any caller may use the Push service")
        if off:
            log.warning(kv("auth.off", detail="; ".join(off)))
        if "edge" in roles and config.auth_enabled and len(config.auth_secret.encode()) < 32:
            log.warning(kv("auth.weak_secret", detail="--auth-secret is under 32 bytes; RFC 7518 asks for 32+"))

    async def drain(self) -> None:
        """Graceful shutdown: NOT_SERVING, leave the registry, move clients off, then stop."""
        if self._draining:
            return
        self._draining = True
        for servicer in self._health:
            await servicer.enter_graceful_shutdown()
        if self.edge:
            await self.edge.drain(self.config.drain_seconds)
        await self.stop()

    async def stop(self) -> None:
        if self.edge:
            await self.edge.stop()
        if self.router:
            await self.router.stop()
        await asyncio.gather(*(server.stop(grace=1.0) for server in self._servers))
        if self.producer:
            await self.producer.close()
        for store in (self.receipts, self.idempotency, self.inbox, self.registry):
            if store is not None:
                await store.close()
        self._stopped.set()
        log.info(kv("server.stopped", edge_id=self.config.edge_id))

    async def serve_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: self._on_signal(s))
        await self._stopped.wait()

    def _on_signal(self, sig: int) -> None:
        if self._draining:
            log.warning(kv("server.signal_again", signal=signal.Signals(sig).name, detail="stopping now"))
            self._tasks.add(asyncio.create_task(self.stop()))
            return
        log.info(kv("server.signal", signal=signal.Signals(sig).name, drain_s=self.config.drain_seconds))
        self._tasks.add(asyncio.create_task(self.drain()))

    def _new_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=[
                *SERVER_OPTIONS,
                ("grpc.max_receive_message_length", max(4 * 1024 * 1024, 4 * self.config.max_payload_bytes)),
            ]
        )
        self._servers.append(server)
        return server

    def _bind(self, server: grpc.aio.Server, port: int, what: str) -> int:
        address = f"{self.config.host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address} for {what}: {exc}") from exc
        if bound == 0:
            raise StartupError(f"cannot listen on {address} for {what}: address in use?")
        return bound

    async def _serve_meta(self, server: grpc.aio.Server, services: list[str]) -> None:
        servicer = health.aio.HealthServicer()
        for name in ["", *services]:
            await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self._health.append(servicer)
        reflection.enable_server_reflection(
            [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )


def advertised_host(config: Config) -> str:
    """Where routers reach this edge: --advertise-host, else --host unless it is a wildcard."""
    if config.advertise_host:
        return config.advertise_host
    if config.host in ("0.0.0.0", "::", "[::]", ""):
        return socket.gethostbyname(socket.gethostname())
    return config.host


def _open_lanes(config: Config, roles: set[str]) -> tuple[LaneProducer | None, LaneConsumer | None]:
    backend = check_queue_url(config.queue)
    needs_producer, needs_consumer = "api" in roles, "router" in roles
    if backend == "memory":
        if needs_producer != needs_consumer:
            raise StartupError(
                "--queue memory:// only works when api and router run in one process "
                "(pushplat dev); use --queue kafka://host:port for separate roles"
            )
        from pushplat.queue.memory import MemoryLaneConsumer, MemoryLaneProducer, MemoryLanes

        lanes = MemoryLanes(config.lane_capacity)
        return (
            MemoryLaneProducer(lanes) if needs_producer else None,
            MemoryLaneConsumer(lanes) if needs_consumer else None,
        )
    from pushplat.queue.kafka import KafkaLaneConsumer, KafkaLaneProducer

    return (
        KafkaLaneProducer.from_config(config) if needs_producer else None,
        KafkaLaneConsumer.from_config(config) if needs_consumer else None,
    )
