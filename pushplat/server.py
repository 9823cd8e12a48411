"""The server lifecycle: open the stores, start each role's gRPC server, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushplat_client.v1 import edge_pb2, push_pb2

from pushplat.api import PushServicer
from pushplat.api.wire import add_unary_servicer
from pushplat.config import ROLES, Config
from pushplat.edge import EdgeNode, check_edge_limits
from pushplat.edge.origins import OriginCheck
from pushplat.edge.servicer import add_edge_servicer
from pushplat.edge.websocket import MIN_MESSAGE_BYTES, WebSocketEdge, ws_tls_context
from pushplat.edge_link import LOCAL_ADDRESS, EdgeLink, GrpcEdgeLink, LocalEdgeLink
from pushplat.health import BoundedHealthServicer
from pushplat.idempotency import IdempotencyStore, open_idempotency
from pushplat.inbox import Inbox, open_inbox
from pushplat.internal_auth import InternalAuth
from pushplat.logs import kv
from pushplat.metrics import MetricsServer, serve_metrics
from pushplat.queue import LaneConsumer, LaneProducer, check_queue_url
from pushplat.receipts import Receipts, open_receipts
from pushplat.reflection import enable_reflection
from pushplat.registry import Registry, open_registry
from pushplat.router import RouterNode
from pushplat.tls import CertificateError, load_ca, load_key_pair, server_credentials
from pushplat.topics import Subscriptions, open_subscriptions
from pushplat.v1 import delivery_pb2, delivery_pb2_grpc

log = logging.getLogger("pushplat.server")

# Keepalive kills half-open TCP connections; the heartbeat catches silent clients.
# (Their intervals come from --keepalive-seconds and --keepalive-timeout-seconds.)
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    # grpc-core cancels calls (CANCELLED, no hint) once ~1,000 wait for the application; a
    # reconnect storm easily exceeds that. Let them queue, and shed load in AdmissionControl
    # instead, with RESOURCE_EXHAUSTED and a retry hint.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 50_000),
    # No channelz service is served, so its per-connection trace nodes are memory for nothing:
    # 0.8 KiB per idle device connection (scripts/bench, 1,000 devices).
    ("grpc.enable_channelz", 0),
]


class StartupError(Exception):
    """The server cannot start: a port is taken or a backend is unreachable."""


@dataclass
class Ports:
    edge: int = 0
    api: int = 0
    delivery: int = 0
    health: int = 0
    ws: int = 0


@dataclass
class Server:
    """Runs the roles named in config.roles in this process."""

    config: Config
    ports: Ports = field(default_factory=Ports)

    def __post_init__(self) -> None:
        self.registry: Registry | None = None
        self.inbox: Inbox | None = None
        self.idempotency: IdempotencyStore | None = None
        self.subscriptions: Subscriptions | None = None
        self.receipts: Receipts | None = None
        self.producer: LaneProducer | None = None
        self.consumer: LaneConsumer | None = None
        self.edge: EdgeNode | None = None
        self.router: RouterNode | None = None
        self.api_servicer: PushServicer | None = None
        self.link: EdgeLink | None = None
        self.ws: WebSocketEdge | None = None
        self._servers: list[grpc.aio.Server] = []
        self._health: list[BoundedHealthServicer] = []
        self._stopped = asyncio.Event()
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics: MetricsServer | None = None
        self._started = False
        self._starting: asyncio.Task[Any] | None = None
        self._signals: set[int] = set()
        self.stop_requested = False  # a signal came before the start finished

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT from before the first port opens: once started, a signal drains; while
        starting, it cancels the start. (Installed only after start, a signal in between killed
        the process undrained.)"""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig not in self._signals:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._signals.add(sig)

    async def start(self) -> None:
        """Open the backends and ports of every role; a signal meanwhile raises CancelledError."""
        self._starting = asyncio.current_task()
        try:
            await self._start()
        finally:
            self._starting = None

    async def _start(self) -> None:
        config = self.config
        roles = set(config.roles)
        # pushplat dev: the router hands batches to the edge in process, so there is no
        # delivery port to guard. Separate roles meet on it and must authenticate each other.
        in_process = {"edge", "router"} <= roles
        try:
            public_tls = _public_credentials(config)
            internal = InternalAuth.from_config(config)
            if "edge" in roles:
                check_edge_limits(config)
        except (CertificateError, ValueError) as exc:
            raise StartupError(str(exc)) from exc
        if "edge" in roles and config.ws_port:
            _check_ws(config)
        # Before any port opens, so a refused start never looks up for a moment.
        if roles & {"edge", "router"} and not in_process and not internal.enabled and not config.insecure_internal:
            raise StartupError(
                "the delivery port needs internal auth between routers and edges: give --internal-secret "
                "(or --internal-tls-cert, --internal-tls-key and --internal-ca), or --insecure-internal "
                "on a network only pushplat roles can reach"
            )
        # First, so a taken metrics port fails before anything else has started.
        metrics_host = config.metrics_host or config.host
        try:
            self._metrics = serve_metrics(metrics_host, config.metrics_port)
        except OSError as exc:
            raise port_error(metrics_host, config.metrics_port, "metrics", exc) from exc
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
            self.inbox = open_inbox(
                config.registry,
                config.inbox_limit,
                config.inbox_wait_replicas,
                config.inbox_wait_timeout_ms,
                memory_bounds=(config.memory_inbox_bytes, config.memory_inbox_devices),
            )
            self.idempotency = open_idempotency(config.registry, config.memory_idempotency_bytes)
            self.subscriptions = open_subscriptions(config.registry)
            self.receipts = open_receipts(config, self.producer)
            await self.receipts.start()
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(f"cannot open backends: {exc}") from exc

        local = LocalEdgeLink() if in_process else None
        self.link = local or GrpcEdgeLink(config.deliver_timeout_seconds, internal)
        public: list[str] = []
        if "edge" in roles:
            try:
                self.edge = EdgeNode(
                    config, self.registry, self.inbox, self.receipts, self.link, subscriptions=self.subscriptions
                )
            except ValueError as exc:  # byte limits that cannot carry a maximum-size message
                raise StartupError(str(exc)) from exc
            if local is not None:
                local.attach(self.edge.delivery)
            else:
                delivery_server = self._new_server(internal.interceptors(), public=False)
                delivery_pb2_grpc.add_DeliveryServicer_to_server(self.edge.delivery, delivery_server)
                self.ports.delivery = self._bind(
                    delivery_server,
                    config.delivery_host or config.host,
                    config.delivery_port,
                    "delivery",
                    internal.server_credentials(),
                )
                await self._serve_meta(delivery_server, [_service_name(delivery_pb2, "Delivery")])
            edge_server = self._new_server()
            add_edge_servicer(self.edge.servicer, edge_server)
            self.ports.edge = self._bind(edge_server, config.host, config.edge_port, "edge", public_tls[0])
            public.append(_service_name(edge_pb2, "Edge"))
            await self._serve_meta(edge_server, public[-1:])
        if "api" in roles:
            api_server = self._new_server()
            try:
                push = PushServicer(
                    config,
                    self.producer,
                    idempotency=self.idempotency,
                    receipts=self.receipts,
                    registry=self.registry,
                    subscriptions=self.subscriptions,
                    inbox=self.inbox,
                )
            except ValueError as exc:  # e.g. a malformed --api-key NAME:KEY
                raise StartupError(str(exc)) from exc
            self.api_servicer = push
            add_unary_servicer(push, push_pb2.DESCRIPTOR.services_by_name["Push"], api_server)
            self.ports.api = self._bind(api_server, config.host, config.api_port, "api", public_tls[1])
            public.append(_service_name(push_pb2, "Push"))
            await self._serve_meta(api_server, public[-1:])
        if public and config.health_port:
            # Kubernetes' gRPC probes and many balancers cannot speak TLS: health alone, in plaintext.
            health_server = self._new_server()
            self.ports.health = self._bind(health_server, config.host, config.health_port, "health", None)
            await self._serve_meta(health_server, public, reflection=False)
        if "router" in roles:
            self.router = RouterNode(config, self.registry, self.consumer, self.inbox, self.receipts, self.link)

        if self.edge:
            address = LOCAL_ADDRESS if in_process else f"{advertised_host(config)}:{self.ports.delivery}"
            await self.edge.start(address)
        if self.router:
            try:
                await self.router.start()
            except Exception as exc:
                raise StartupError(f"cannot start the router: {exc}") from exc
        for server in self._servers:
            await server.start()
        if self.edge and config.ws_port:
            await self._start_ws()
        self._started = True
        log.info(
            kv(
                "server.started",
                roles=",".join(sorted(roles)),
                edge_id=config.edge_id,
                edge_port=self.ports.edge or None,
                api_port=self.ports.api or None,
                delivery_port=self.ports.delivery or None,
                health_port=self.ports.health or None,
                ws_port=self.ports.ws or None,
                tls="on" if public_tls[0] else "off",
                api_mtls="on" if config.api_tls_client_ca and "api" in roles else None,
                internal_auth="in-process" if in_process else internal.mechanisms,
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
        if not in_process and roles & {"edge", "router"}:
            if not internal.enabled:
                log.warning(
                    kv(
                        "internal.insecure",
                        detail="--insecure-internal: anyone who reaches a delivery port can push to and evict devices",
                    )
                )
            elif internal.weak_secret:
                log.warning(kv("internal.weak_secret", detail="an --internal-secret is under 32 bytes"))

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
        if self.ws:
            await self.ws.stop()
        if self.router:
            await self.router.stop()
        if self.link:
            await self.link.close()
        await asyncio.gather(*(server.stop(grace=1.0) for server in self._servers))
        # Receipts first: their last flush may go through the lanes' producer.
        if self.receipts is not None:
            await self.receipts.close()
        if self.producer:
            await self.producer.close()
        for store in (self.subscriptions, self.idempotency, self.inbox, self.registry):
            if store is not None:
                await store.close()
        if self._metrics is not None:
            self._metrics.stop()
        self._stopped.set()
        if self._started:  # after a failed start, the start-up error is the one line to read
            log.info(kv("server.stopped", edge_id=self.config.edge_id))

    async def serve_until_signal(self) -> None:
        self.handle_signals()
        await self._stopped.wait()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self._started:
            if self.stop_requested:
                # The first one's cancel can be lost on the way (Python 3.11's wait_for swallows
                # a cancel that races its inner call), or the stop itself hangs: end it now.
                log.warning(kv("server.signal_again", signal=name, detail="stopping now"))
                asyncio.get_running_loop().remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
                return
            self.stop_requested = True
            log.info(kv("server.signal", signal=name, detail="while starting: stopping"))
            if self._starting is not None:  # nothing is served yet, so there is nothing to drain
                self._starting.cancel()
            return
        if self._draining:
            log.warning(kv("server.signal_again", signal=name, detail="stopping now"))
            self._tasks.add(asyncio.create_task(self.stop()))
            return
        log.info(kv("server.signal", signal=name, drain_s=self.config.drain_seconds))
        self._tasks.add(asyncio.create_task(self.drain()))

    async def _start_ws(self) -> None:
        """WebSocket devices on their own port, served by the same session lifecycle as gRPC streams."""
        config = self.config
        assert self.edge is not None
        host = config.ws_host or config.host
        free_or_fail(host, config.ws_port, "ws", reuse_port=config.reuse_port)
        tls = ws_tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        self.ws = WebSocketEdge(config, self.edge.lifecycle)
        try:
            self.ports.ws = await self.ws.start(host, config.ws_port, tls)
        except OSError as exc:
            raise port_error(host, config.ws_port, "ws", exc) from exc

    def _new_server(
        self, interceptors: list[grpc.aio.ServerInterceptor] | None = None, public: bool = True
    ) -> grpc.aio.Server:
        config = self.config
        # Connections that never finish their handshake, or (on public ports) hold no call, are
        # closed instead of being held open for free by whoever opened them.
        closing = [("grpc.server_handshake_timeout_ms", max(1, round(config.handshake_timeout_seconds * 1000)))]
        if public and config.idle_connection_seconds > 0:
            closing.append(("grpc.max_connection_idle_ms", max(1, round(config.idle_connection_seconds * 1000))))
        # Off unless --workers shares the public ports: then the kernel spreads new connections
        # over the workers. Otherwise a second process on the port is an error, not a silent split.
        reuse_port = 1 if public and config.reuse_port else 0
        server = grpc.aio.server(
            interceptors=interceptors or None,
            options=[
                *SERVER_OPTIONS,
                ("grpc.so_reuseport", reuse_port),
                *closing,
                ("grpc.keepalive_time_ms", int(config.keepalive_seconds * 1000)),
                ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
                ("grpc.max_receive_message_length", max(4 * 1024 * 1024, 4 * config.max_payload_bytes)),
            ],
        )
        self._servers.append(server)
        return server

    def _bind(
        self, server: grpc.aio.Server, host: str, port: int, what: str, credentials: grpc.ServerCredentials | None
    ) -> int:
        address = f"{host}:{port}"
        # gRPC's own bind failure is a core log line plus a vague RuntimeError; say it plainly.
        free_or_fail(host, port, what, reuse_port=self.config.reuse_port and what != "delivery")
        try:
            if credentials is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen on {address} for {what}: {exc}") from exc
        if bound == 0:
            raise StartupError(f"cannot listen on {address} for {what}: address in use?")
        return bound

    async def _serve_meta(self, server: grpc.aio.Server, services: list[str], reflection: bool = True) -> None:
        servicer = BoundedHealthServicer()
        for name in ["", *services]:
            await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self._health.append(servicer)
        if not reflection:
            return
        enable_reflection([*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)


def free_or_fail(host: str, port: int, what: str, reuse_port: bool = False) -> None:
    """Raise StartupError unless host:port can be bound now (port 0 always can); with
    reuse_port, a port that sibling workers hold with SO_REUSEPORT counts as free."""
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise port_error(host, port, what, exc) from exc
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As the real servers do: a port left in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                raise port_error(host, port, what, exc) from exc


def port_error(host: str, port: int, what: str, exc: OSError) -> StartupError:
    """One line that says which port, for what, and which option picks another."""
    detail = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return StartupError(f"cannot listen on {host}:{port} for {what}: {detail} (choose another --{what}-port)")


WILDCARDS = ("0.0.0.0", "::", "[::]", "")


def advertised_host(config: Config) -> str:
    """Where routers reach this edge: --advertise-host, else the delivery port's bind host
    (--delivery-host, else --host) unless it is a wildcard."""
    if config.advertise_host:
        return config.advertise_host
    bound = config.delivery_host or config.host
    if bound in WILDCARDS:
        return socket.gethostbyname(socket.gethostname())
    return bound


def _service_name(module: object, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name  # type: ignore[attr-defined]


def _public_credentials(config: Config) -> tuple[grpc.ServerCredentials | None, grpc.ServerCredentials | None]:
    """TLS for the device port and the api port (the api's with the client CA, if any)."""
    if not (config.tls_cert or config.tls_key):
        if config.api_tls_client_ca:
            raise CertificateError("--api-tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first")
        return None, None
    pair = load_key_pair(config.tls_cert, config.tls_key, "--tls-cert", "--tls-key")
    client_ca = load_ca(config.api_tls_client_ca, "--api-tls-client-ca") if config.api_tls_client_ca else None
    return server_credentials(pair), server_credentials(pair, client_ca)


def _check_ws(config: Config) -> None:
    if config.ws_max_message_bytes < MIN_MESSAGE_BYTES:
        raise StartupError(
            f"--ws-max-message-bytes {config.ws_max_message_bytes} is too small: a Hello with a token, or an "
            f"Ack of the ids SDKs send in one frame, needs up to {MIN_MESSAGE_BYTES} bytes"
        )
    try:
        OriginCheck(config.ws_allowed_origins)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc


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

        lanes = MemoryLanes(config.lane_capacity, config.lane_bytes)
        return (
            MemoryLaneProducer(lanes) if needs_producer else None,
            MemoryLaneConsumer(lanes) if needs_consumer else None,
        )
    from pushplat.queue.kafka import KafkaLaneConsumer, KafkaLaneProducer

    return (
        KafkaLaneProducer.from_config(config) if needs_producer else None,
        KafkaLaneConsumer.from_config(config) if needs_consumer else None,
    )
