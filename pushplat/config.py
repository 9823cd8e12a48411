"""One Config object for every role. The CLI fills it from flags and PUSHPLAT_* variables."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import uuid
from dataclasses import dataclass, field

ROLES = ("api", "router", "edge")
# Frames well under gRPC clients' default 4 MiB receive limit, and small enough that a high
# message waits behind at most one frame on a slow link.
DEFAULT_FRAME_BYTES = 1024 * 1024
PORTS = ("edge_port", "api_port", "delivery_port", "metrics_port", "health_port", "ws_port")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Checked where they are used, by a stricter rule whose message says all of it.
OWN_RULES = ("memory_trim_seconds", "gc_young_objects", "workers")


@dataclass
class Config:
    roles: tuple[str, ...] = ROLES
    host: str = "127.0.0.1"
    edge_port: int = 50051
    api_port: int = 50052
    # Routers reach edges here (Delivery service); kept off the client-facing port so that a
    # layer-4 balancer in front of edge_port never sees internal traffic.
    delivery_port: int = 50053
    # The delivery port's own bind address, so it can sit on a private interface; "" = `host`.
    delivery_host: str = ""
    # The host routers use to reach this edge's delivery port; defaults to `host`.
    advertise_host: str = ""
    # Prometheus metrics over HTTP; 0 turns them off. "" binds them on `host`.
    metrics_port: int = 0
    metrics_host: str = ""
    # A plaintext port serving only grpc.health.v1, for probes that cannot speak TLS; 0 = off.
    health_port: int = 0
    # WebSocket devices (browsers) on their own port, ws:// (wss:// with tls_cert); 0 = off.
    # `pushplat dev` turns it on (the CLI's default there is 50054). "" binds it on `host`.
    ws_port: int = 0
    ws_host: str = ""
    # Origins whose pages may connect (see pushplat.edge.origins); none = localhost pages only.
    ws_allowed_origins: list[str] = field(default_factory=list)
    # Largest WebSocket message a client may send (a ClientFrame); over it the connection closes (1009).
    ws_max_message_bytes: int = 256 * 1024

    # TLS on the public ports (device and api); both files or neither.
    tls_cert: str = ""
    tls_key: str = ""
    # With this CA, api clients must present a certificate it signed (mutual TLS).
    api_tls_client_ca: str = ""

    # Auth between roles on the delivery port: shared secrets (the first is sent, any is
    # accepted, for rotation) and/or mutual TLS with a private CA.
    internal_secrets: list[str] = field(default_factory=list)
    internal_tls_cert: str = ""
    internal_tls_key: str = ""
    internal_ca: str = ""
    # The name edges' certificates carry, when routers dial them by IP.
    internal_tls_server_name: str = ""
    # Run a separate edge or router without internal auth (trusted networks only).
    insecure_internal: bool = False
    edge_id: str = ""

    registry: str = "memory://"
    queue: str = "memory://"
    topic_prefix: str = "pushplat"
    # Partitions (and replication) of the lane topics this creates; routers scale up to the
    # partition count of a lane.
    kafka_partitions: int = 6
    kafka_replication: int = 1
    # How long a Send waits for Kafka to ack before it answers UNAVAILABLE.
    kafka_publish_timeout_seconds: float = 10.0
    # Connecting (and each admin or commit request) to Kafka gives up after this.
    kafka_connect_timeout_seconds: float = 10.0
    # The routers' consumer group ("" = <topic_prefix>.routers), how long a router may stay
    # silent before the group moves its partitions, and its heartbeat (0 = min(3 s, session / 3)).
    kafka_group_id: str = ""
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 0
    # How long the producer waits to fill a batch: a few ms buy much larger requests.
    kafka_linger_ms: int = 3

    auth_secret: str = ""
    api_keys: list[str] = field(default_factory=list)

    max_payload_bytes: int = 64 * 1024
    default_ttl_seconds: int = 24 * 3600
    max_ttl_seconds: int = 28 * 24 * 3600

    heartbeat_interval_ms: int = 30_000
    # A session silent for this many heartbeat intervals is closed.
    heartbeat_misses: int = 3
    hello_timeout_seconds: float = 10.0
    # Each session lives max_age_seconds minus a random share of up to max_age_jitter.
    max_age_seconds: float = 1800.0
    max_age_jitter: float = 0.1
    # GoAway(MAX_AGE) asks the client to come back within [0, reconnect_spread_ms).
    reconnect_spread_ms: int = 5_000
    goaway_grace_seconds: float = 5.0
    drain_seconds: float = 30.0
    session_queue_limit: int = 10_000
    # Each device's queue is also bounded in bytes (serialized size plus 512 bytes of bookkeeping
    # per message; Centrifugo's default is 1 MiB per client); a device that stays over it for
    # slow_consumer_seconds gets GoAway(SLOW_CONSUMER).
    session_queue_bytes: int = 1024 * 1024
    slow_consumer_seconds: float = 5.0
    # After sessions end with queued messages (a wave of slow consumers), give the freed heap
    # back to the OS (malloc_trim, in a thread), at most this often; 0 = never (see memory_trim.py).
    memory_trim_seconds: float = 10.0
    # Largest ServerFrame on a device stream, announced in Welcome; 0: 1 MiB, or one
    # maximum-size message if that is larger (see frame_bytes).
    max_frame_bytes: int = 0
    # Per session: pushed, unacked message ids remembered to check acks (and label their receipts).
    session_ack_memory_bytes: int = 256 * 1024
    # Admission control per edge; 0 turns a limit off. Only authenticated Hellos take a token.
    max_connections: int = 100_000
    max_connects_per_second: float = 1_000.0
    # session.open/session.close log lines per second; past it they are counted, not written (the
    # next line written says how many were held back). Connect churn is client-driven. 0: no limit.
    session_log_lines_per_second: float = 100.0
    # Streams open but still waiting for their Hello (each for up to hello_timeout_seconds).
    max_pending_hellos: int = 1_000
    # TCP connections that have not finished the HTTP/2 (or TLS) handshake by then are closed,
    # and so are connections with no call open for idle_connection_seconds (edge and api ports).
    handshake_timeout_seconds: float = 5.0
    idle_connection_seconds: float = 30.0

    # Per-sender (API-key identity) token bucket on the api, in messages; 0 turns it off.
    send_rate: float = 0.0
    # 0: one second's worth of send_rate.
    send_burst: float = 0.0
    # Label keys counted per value in pushplat_labelled_events_total, and the cap on distinct
    # values per key (later values count as "__other__"). No keys: no per-label series.
    metric_label_keys: list[str] = field(default_factory=list)
    metric_label_values_max: int = 100

    # A SendStream reads at most this many requests (and bytes) ahead of its answers.
    send_stream_window: int = 1_000
    send_stream_window_bytes: int = 8 * 1024 * 1024
    # Receipts wait in a bounded buffer and are flushed in the background this often (and
    # when half full); past either bound new receipts are dropped and counted.
    receipt_flush_ms: float = 50.0
    receipt_buffer_entries: int = 100_000
    receipt_buffer_bytes: int = 32 * 1024 * 1024

    # A repeat Send with the same idempotency_key within this window is a duplicate.
    idempotency_window_seconds: float = 24 * 3600.0
    # How long a device stays bound to its user, and the user's device list remembers it
    # (refreshed on every connect); until then another user's Hello for it is refused.
    device_memory_seconds: float = 30 * 24 * 3600.0
    registry_ttl_seconds: float = 60.0
    # How often an edge checks that the registry still has its own entry (a Redis restart or
    # flush loses it), and then re-creates its sessions' entries at once; 0: only every ttl/3.
    registry_check_seconds: float = 1.0
    router_batch_size: int = 256
    # Deadline of one Delivery.Deliver call; past it the call counts as a failure of that edge.
    deliver_timeout_seconds: float = 2.0
    # Per edge, in each router: deliveries (and their message bytes) queued at most; more are
    # refused (at-least-once ones stay in the inbox).
    edge_queue_messages: int = 10_000
    edge_queue_bytes: int = 16 * 1024 * 1024
    # Circuit breaker per edge: open after this many consecutive failed calls, probe after
    # this long (doubling on every failed probe, up to 30 s).
    edge_breaker_failures: int = 3
    edge_breaker_open_seconds: float = 1.0
    # Records a router holds between fetching and committing them; at the cap it stops fetching.
    router_max_in_flight: int = 100_000
    # After each inbox write, wait for this many Redis replicas to have it (WAIT), at most
    # inbox_wait_timeout_ms; 0: do not wait (replication stays asynchronous).
    inbox_wait_replicas: int = 0
    inbox_wait_timeout_ms: int = 100
    lane_capacity: int = 1_000_000
    # The in-memory stores of `pushplat dev` (registry memory://), each bounded in bytes (estimated
    # from measured per-entry costs) or entries; past a bound the oldest entries go first, counted
    # in pushplat_store_evictions_total{store}. A full lane refuses Send (UNAVAILABLE) instead.
    lane_bytes: int = 256 * 1024 * 1024
    memory_inbox_bytes: int = 256 * 1024 * 1024
    memory_inbox_devices: int = 1_000_000
    memory_status_bytes: int = 32 * 1024 * 1024
    memory_receipt_events: int = 10_000
    memory_idempotency_bytes: int = 64 * 1024 * 1024
    # At-least-once messages kept per device inbox; beyond it the oldest go first.
    inbox_limit: int = 10_000
    # gRPC keepalive on every server: finds half-open TCP connections.
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0

    # Topics: how many one device may hold, how often a device may change its own (frames per
    # second per session; twice that at once), and which topics get a per-topic metric series
    # (names or fnmatch patterns; none by default: topic names can be high-cardinality).
    max_topics_per_device: int = 2_000
    topic_changes_per_second: float = 10.0
    metric_topics: list[str] = field(default_factory=list)

    log_level: str = "info"
    # Objects allocated between young collections of Python's cycle collector (gc_policy.py).
    gc_young_objects: int = 50_000
    # api, router and edge as this many processes under a supervisor (pushplat.workers); each
    # worker binds the shared public ports with SO_REUSEPORT (reuse_port).
    workers: int = 1
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if not self.edge_id:
            # Unique per process so that a restarted edge never inherits a dead one's sessions.
            self.edge_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_secret)

    @property
    def frame_bytes(self) -> int:
        """The frame cap in effect: max_frame_bytes, or its default (see check_edge_limits)."""
        from pushplat.limits import largest_frame_message

        return self.max_frame_bytes or max(DEFAULT_FRAME_BYTES, largest_frame_message(self.max_payload_bytes))

    @property
    def heartbeat_timeout_seconds(self) -> float:
        return self.heartbeat_interval_ms * self.heartbeat_misses / 1000.0

    def check(self) -> None:
        """Raise ValueError, naming the flag, for a value no option takes: a port outside 0-65535
        (gRPC would bind 99999 as 34463), a negative number (0 is each option's "off" or
        "default"), a jitter share over 1, an unknown log level (it was taken as info)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.name in PORTS and not 0 <= value <= 65535:
                raise ValueError(f"{flag} must be 0 to 65535, got {value}")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            # argparse's float takes "nan" and "inf": nan passes every comparison, and inf seconds
            # overflow where they become gRPC's milliseconds.
            if not math.isfinite(value):
                raise ValueError(f"{flag} must be a finite number, got {value}")
            if value < 0 and f.name not in OWN_RULES:
                raise ValueError(f"{flag} must be 0 or more, got {value:g}")
        if self.max_age_jitter > 1:
            raise ValueError(f"--max-age-jitter is a share of --max-age-seconds: 0 to 1, got {self.max_age_jitter:g}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
