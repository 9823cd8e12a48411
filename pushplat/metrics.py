"""Prometheus metrics shared by every role. Open connections is the autoscaling signal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# The total, unlabelled: the autoscaling signal (an HPA adapter reads one series per pod).
OPEN_CONNECTIONS = Gauge("pushplat_open_connections", "Device streams currently open on this edge")
OPEN_CONNECTIONS_BY_TRANSPORT = Gauge(
    "pushplat_open_connections_by_transport",
    "Device streams currently open on this edge, per transport (grpc, websocket)",
    ["transport"],
)
CONNECTS = Counter("pushplat_connects_total", "Device streams accepted or refused", ["result", "transport"])
DISCONNECTS = Counter("pushplat_disconnects_total", "Device streams closed", ["reason", "transport"])
MESSAGES_IN = Counter("pushplat_messages_in_total", "Messages accepted by the api", ["priority"])
MESSAGES_OUT = Counter("pushplat_messages_out_total", "Messages written to device streams", ["priority"])
DROPPED = Counter("pushplat_messages_dropped_total", "Messages not pushed", ["reason"])
ACKS = Counter("pushplat_acks_total", "Message ids acked by devices")
SEND_TO_PUSH = Histogram(
    "pushplat_send_to_push_seconds",
    "From the Send call to the write on the device stream",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REGISTRY_LATENCY = Histogram(
    "pushplat_registry_seconds",
    "Registry call latency",
    ["op"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
GC_PAUSE = Histogram(
    "pushplat_gc_pause_seconds",
    "Pauses of Python's cycle collector, per generation (2: a full collection)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LANE_LAG = Gauge("pushplat_lane_lag_seconds", "Age of the newest message a router took, per lane", ["lane"])


class MetricsServer:
    """The /metrics HTTP server on its own thread."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_metrics(host: str, port: int) -> MetricsServer | None:
    """Expose /metrics over HTTP on its own thread; port 0 means off. Raises OSError if taken."""
    return MetricsServer(host, port) if port else None


LABELLED_EVENTS = Counter(
    "pushplat_labelled_events_total",
    "Deliveries and acks per message label (only the --metric-label-keys), for A/B comparisons",
    ["state", "label", "value"],
)
# The value counted for a label once its key has --metric-label-values-max distinct values.
OTHER_LABEL_VALUE = "__other__"
INBOX_SIZE = Histogram(
    "pushplat_inbox_replay_messages",
    "Messages replayed from a device's inbox on connect",
    buckets=(0, 1, 5, 10, 50, 100, 500, 1000),
)
LIMITS_HIT = Counter(
    "pushplat_limits_hit_total",
    "Client calls refused (or values folded) by a limit, per limit (see the README's Limits table)",
    ["limit"],
)
SEND_STREAM_WINDOW_FULL = Counter(
    "pushplat_send_stream_window_full_total",
    "Times a SendStream stopped reading because its window (--send-stream-window, --send-stream-window-bytes) was full",
)
STORE_EVICTIONS = Counter(
    "pushplat_store_evictions_total",
    "Entries an in-memory store dropped, oldest first, to stay within its byte bound (see the README's memory bounds)",
    ["store"],
)
WS_HANDSHAKES = Counter(
    "pushplat_ws_handshakes_total",
    "WebSocket upgrade requests on the edge, per result (ok, origin, subprotocol, not_found)",
    ["result"],
)
RECEIPT_ERRORS = Counter("pushplat_receipt_errors_total", "Receipts that could not be recorded or published", ["what"])


class LabelMetrics:
    """Counts events per label for the keys the operator listed, with at most max_values
    distinct values per key: senders choose label values, so without a cap they would choose
    how many series /metrics has. Later values are counted as OTHER_LABEL_VALUE."""

    def __init__(self, keys: Iterable[str] = (), max_values: int = 100) -> None:
        self.keys = tuple(dict.fromkeys(k for k in keys if k))
        self.max_values = max_values
        self._values: dict[str, set[str]] = {key: set() for key in self.keys}
        # Counter children, resolved once: bounded by states x keys x (max_values + 1).
        self._children: dict[tuple[str, str, str], Any] = {}

    def count(self, state: str, labels: Mapping[str, str], amount: int = 1) -> None:
        for key in self.keys:
            value = labels.get(key)
            if value is None:
                continue
            seen = self._values[key]
            if value not in seen:
                if len(seen) >= self.max_values:
                    LIMITS_HIT.labels("metric_label_values").inc()
                    value = OTHER_LABEL_VALUE
                else:
                    seen.add(value)
            child = self._children.get((state, key, value))
            if child is None:
                child = self._children[(state, key, value)] = LABELLED_EVENTS.labels(state, key, value)
            child.inc(amount)


def by_priority(counter: Counter) -> dict[int, Counter]:
    """The counter's child per Priority value, resolved once instead of per message."""
    from pushplat.messages import Priority, priority_name

    return {value: counter.labels(priority_name(value)) for value in Priority.values()}


INTERNAL_AUTH_REFUSED = Counter(
    "pushplat_internal_auth_refused_total", "Calls to the delivery port refused for lack of the internal secret"
)
# The router's delivery path (one queue and circuit breaker per edge) and registry healing.
ROUTER_IN_FLIGHT = Gauge(
    "pushplat_router_in_flight_records",
    "Records a router holds between fetching and committing them (--router-max-in-flight)",
)
EDGE_QUEUE_MESSAGES = Gauge(
    "pushplat_router_edge_queue_messages", "Deliveries waiting in a router's per-edge queues, all edges together"
)
EDGE_QUEUE_BYTES = Gauge(
    "pushplat_router_edge_queue_bytes", "Message bytes waiting in a router's per-edge queues, all edges together"
)
EDGE_CIRCUITS = Gauge(
    "pushplat_router_edge_circuits", "Edges a router delivers to, by the state of its circuit breaker", ["state"]
)
EDGE_CIRCUIT_CHANGES = Counter(
    "pushplat_router_edge_circuit_changes_total", "Circuit breaker transitions, by the state entered", ["state"]
)
DELIVER_SECONDS = Histogram(
    "pushplat_router_deliver_seconds",
    "Duration of the router's Delivery.Deliver calls (one per edge per batch)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REGISTRY_HEALED = Counter(
    "pushplat_registry_healed_total",
    "Live sessions whose registry entries an edge re-created after the store lost them",
)
INBOX_WAIT_SHORT = Counter(
    "pushplat_inbox_wait_short_total",
    "Inbox writes that fewer replicas than --inbox-wait-replicas acknowledged within --inbox-wait-timeout-ms",
)
KAFKA_PRODUCER_RESETS = Counter(
    "pushplat_kafka_producer_resets_total",
    "Kafka producers an api (or receipt publisher) replaced because they had stopped sending or lost their "
    "idempotent sequence state (event=kafka.producer_reset says why)",
)

# Topics (issue 14). Per-topic series only for topics the operator allows (--metric-topics).
TOPIC_SUBSCRIBERS = Gauge(
    "pushplat_topic_subscribers",
    "Sessions on this edge subscribed to the topic (only topics named by --metric-topics)",
    ["topic"],
)
EDGE_TOPICS = Gauge("pushplat_edge_topics", "Distinct topics with at least one subscribed session on this edge")
EDGE_TOPIC_SUBSCRIPTIONS = Gauge(
    "pushplat_edge_topic_subscriptions", "Subscriptions (session, topic) in this edge's local topic index"
)
TOPIC_FANOUT = Counter(
    "pushplat_topic_fanout_total", "Topic messages fanned out on this edge, per session, by outcome", ["outcome"]
)
TOPIC_RESTORES = Counter(
    "pushplat_topic_restores_total", "Subscriptions restored from the store when a session opened", ["result"]
)
MEMORY_TRIMS = Counter(
    "pushplat_memory_trims_total", "Times the edge gave freed heap memory back to the OS after sessions ended"
)
MEMORY_TRIMMED_BYTES = Counter(
    "pushplat_memory_trimmed_bytes_total", "RSS those trims gave back (the drop in RSS across each trim)"
)
