"""The `pushplat` command. Every option can also be set as PUSHPLAT_<OPTION> in the environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pushplat import __version__
from pushplat.config import Config
from pushplat.logs import kv

ENV_PREFIX = "PUSHPLAT_"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    repeat: bool = False,
    switch: bool = False,
    required: bool = False,
    metavar: str | None = None,
) -> None:
    """An option whose default comes from PUSHPLAT_<OPTION>; says so in --help."""
    env = env_name(flag)
    raw = os.environ.get(env)
    text = f"{help} [env {env}"
    if switch:
        value = raw.lower() in ("1", "true", "yes", "on") if raw is not None else bool(default)
        parser.add_argument(flag, action="store_true", default=value, help=text + "]")
        return
    if repeat:
        value = [v.strip() for v in raw.split(",") if v.strip()] if raw is not None else list(default or [])
        parser.add_argument(
            flag,
            action="append",
            type=type,
            default=None,
            metavar=metavar,
            help=text + ", comma-separated; repeatable]",
        )
        parser.set_defaults(**{_dest(flag) + "_env": value})
        return
    try:
        value = type(raw) if raw is not None else default
    except (ValueError, argparse.ArgumentTypeError) as exc:
        # Reported by main() only if this command is the one run: a variable another command
        # reads must not break this one, and the user gets one line, not a traceback.
        value = default
        names = {"int": "not a whole number", "float": "not a number"}
        reason = names.get(getattr(type, "__name__", ""), str(exc))
        parser.set_defaults(env_errors=[*(parser.get_default("env_errors") or []), f"{env}={raw!r}: {reason}"])
    # --help must never print a secret that came from the environment.
    if value is not None and not required and not _is_secret(flag):
        text += f"; default {value}"
    parser.add_argument(
        flag, type=type, default=value, metavar=metavar, required=required and value is None, help=text + "]"
    )


def _is_secret(flag: str) -> bool:
    return any(word in flag for word in ("secret", "-key"))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _repeated(args: argparse.Namespace, flag: str) -> list[str]:
    """A repeatable option's values: each flag (or the variable) may hold a comma-separated list."""
    given = getattr(args, _dest(flag))
    values = given if given is not None else getattr(args, _dest(flag) + "_env")
    return [item for value in values for item in value.split(",") if item]


def _server_options(parser: argparse.ArgumentParser, roles: Sequence[str], dev: bool) -> None:
    d = Config()
    add_option(parser, "--host", default=d.host, help="interface to listen on")
    if "edge" in roles:
        add_option(
            parser,
            "--edge-port",
            type=int,
            default=d.edge_port,
            help="port for device streams (Edge.Connect); 0 picks a free port",
        )
        if dev:
            add_option(
                parser,
                "--delivery-port",
                type=int,
                help="unused: pushplat dev hands batches to its edge in process, with no delivery port "
                "(accepted so that older scripts keep working)",
            )
        else:
            add_option(
                parser,
                "--delivery-port",
                type=int,
                default=d.delivery_port,
                help="internal port where routers hand messages to this edge (Delivery.Deliver/Evict)",
            )
            add_option(
                parser,
                "--delivery-host",
                default="",
                help="interface for the delivery port alone, e.g. a private one (default: --host)",
            )
            add_option(
                parser,
                "--advertise-host",
                default="",
                help="host routers use to reach the delivery port (default: --delivery-host, else --host)",
            )
        _ws_options(parser, d, dev)
        add_option(parser, "--edge-id", default="", help="this edge's id in the registry (default: host-pid-random)")
        add_option(
            parser,
            "--auth-secret",
            default="",
            help="HS256 secret for device tokens; without it auth is off and Hello ids are trusted",
        )
        add_option(
            parser,
            "--heartbeat-interval-ms",
            type=int,
            default=d.heartbeat_interval_ms,
            help="how often clients must ping; silent for 3 intervals means dead",
        )
        add_option(
            parser,
            "--max-age-seconds",
            type=float,
            default=d.max_age_seconds,
            help="maximum connection age, less up to 10%% at random",
        )
        add_option(
            parser,
            "--drain-seconds",
            type=float,
            default=d.drain_seconds,
            help="on SIGTERM, spread clients' reconnects over this many seconds",
        )
        add_option(
            parser,
            "--session-queue-limit",
            type=int,
            default=d.session_queue_limit,
            help="messages buffered per device stream before drops",
        )
        add_option(
            parser,
            "--session-queue-bytes",
            type=int,
            default=d.session_queue_bytes,
            help="bytes buffered per device stream (serialized size + 512 per message); beyond it at-most-once "
            "messages are dropped (queue_full) and at-least-once ones wait in the inbox",
        )
        add_option(
            parser,
            "--slow-consumer-seconds",
            type=float,
            default=d.slow_consumer_seconds,
            help="a device whose queue stays over --session-queue-bytes (or --session-queue-limit) this long "
            "gets GoAway(SLOW_CONSUMER) and is disconnected",
        )
        add_option(
            parser,
            "--memory-trim-seconds",
            type=float,
            default=d.memory_trim_seconds,
            help="once sessions that ended held half a --session-queue-bytes between them (a slow consumer "
            "alone does), give the memory they freed back to the OS (glibc malloc_trim, off the event loop), "
            "at most this often; 0 = never",
        )
        add_option(
            parser,
            "--max-frame-bytes",
            type=int,
            default=d.max_frame_bytes,
            help="largest ServerFrame written to a device (announced in Welcome; the SDKs match their receive "
            "limit); 0: 1 MiB, or one maximum-size message if larger; must hold --max-payload-bytes + 8 KiB",
        )
        add_option(
            parser,
            "--session-ack-memory-bytes",
            type=int,
            default=d.session_ack_memory_bytes,
            help="per device stream: memory for pushed, unacked message ids (to check acks); the oldest are "
            "forgotten first",
        )
        _edge_tunables(parser, d)
    if "api" in roles:
        add_option(
            parser,
            "--api-port",
            type=int,
            default=d.api_port,
            help="port for backends (Push.Send); 0 picks a free port",
        )
        add_option(
            parser,
            "--api-key",
            repeat=True,
            metavar="KEY",
            help="require 'authorization: Bearer KEY' on Push calls; NAME:KEY names the sender (several keys "
            "of one name are one sender, for rotation); without any the api is open",
        )
        add_option(
            parser, "--max-payload-bytes", type=int, default=d.max_payload_bytes, help="largest accepted payload"
        )
        _api_tunables(parser, d)
    elif "edge" in roles:
        add_option(
            parser,
            "--max-payload-bytes",
            type=int,
            default=d.max_payload_bytes,
            help="largest payload the api accepts (set it as on the api): the default --max-frame-bytes holds one",
        )
    if "router" in roles:
        _router_tunables(parser, d)
    if "edge" in roles or "router" in roles:
        add_option(
            parser,
            "--inbox-limit",
            type=int,
            default=d.inbox_limit,
            help="at-least-once messages kept per device inbox; beyond it the oldest go first",
        )
    if dev:
        add_option(
            parser,
            "--lane-capacity",
            type=int,
            default=d.lane_capacity,
            help="messages each in-process priority lane holds; a full lane answers Send with UNAVAILABLE",
        )
        _memory_store_bounds(parser, d)
    if "api" in roles:
        add_option(
            parser,
            "--api-tls-client-ca",
            default="",
            help="PEM CA file: api clients must present a certificate it signed (mutual TLS; needs --tls-cert)",
        )
    if "edge" in roles or "api" in roles:
        _public_tls_options(parser, d)
        _topic_options(parser, roles, d)
    if not dev and ("edge" in roles or "router" in roles):
        _internal_auth_options(parser)
    if not dev:
        add_option(
            parser,
            "--workers",
            type=int,
            default=d.workers,
            help="run this role as N processes under a supervisor that forwards SIGTERM and restarts "
            "crashed workers; they share the device/api port (SO_REUSEPORT), and each edge worker has its "
            "own edge id (<edge-id>-w<i>) and delivery port (base + i); metrics ports are base + i",
        )
        add_option(
            parser,
            "--reuse-port",
            switch=True,
            help="bind the device, api and health ports with SO_REUSEPORT, shared with other processes "
            "(--workers sets it for its workers)",
        )
        add_option(
            parser,
            "--registry",
            default=d.registry,
            help="push registry: memory://, redis://host:port/db or redis+cluster://host:port",
        )
        add_option(
            parser, "--queue", default=d.queue, help="priority lanes: memory:// or kafka://host:port[,host:port]"
        )
        add_option(
            parser,
            "--topic-prefix",
            default=d.topic_prefix,
            help="Kafka topics are <prefix>.high, <prefix>.normal, <prefix>.low and <prefix>.receipts",
        )
        add_option(
            parser,
            "--kafka-partitions",
            type=int,
            default=d.kafka_partitions,
            help="partitions of each lane topic when this creates it (routers scale up to this)",
        )
        add_option(
            parser,
            "--kafka-replication",
            type=int,
            default=d.kafka_replication,
            help="replication factor of the topics this creates",
        )
        add_option(
            parser,
            "--kafka-publish-timeout-seconds",
            type=float,
            default=d.kafka_publish_timeout_seconds,
            help="how long a Send waits for Kafka's ack before it answers UNAVAILABLE",
        )
        _kafka_tunables(parser, d)
    add_option(
        parser,
        "--handshake-timeout-seconds",
        type=float,
        default=d.handshake_timeout_seconds,
        help="close TCP connections that have not completed the HTTP/2 handshake within this",
    )
    add_option(
        parser,
        "--idle-connection-seconds",
        type=float,
        default=d.idle_connection_seconds,
        help="close device and api connections that hold no call for this long (0: never)",
    )
    add_option(
        parser,
        "--metric-label-keys",
        repeat=True,
        metavar="KEY",
        help="message label keys counted per value in pushplat_labelled_events_total (default none)",
    )
    add_option(
        parser,
        "--metric-label-values-max",
        type=int,
        default=d.metric_label_values_max,
        help="distinct values counted per label key; later ones count as __other__",
    )
    _receipt_options(parser, d)
    add_option(
        parser,
        "--metrics-port",
        type=int,
        default=d.metrics_port,
        help="serve Prometheus /metrics on this port; 0 turns it off",
    )
    add_option(
        parser,
        "--keepalive-seconds",
        type=float,
        default=d.keepalive_seconds,
        help="gRPC keepalive ping interval; finds half-open TCP connections the heartbeat cannot see",
    )
    add_option(
        parser,
        "--keepalive-timeout-seconds",
        type=float,
        default=d.keepalive_timeout_seconds,
        help="a keepalive ping unanswered this long closes the connection",
    )
    add_option(parser, "--metrics-host", default="", help="interface for /metrics alone (default: --host)")
    add_option(parser, "--log-level", default=d.log_level, help="debug, info, warning or error")
    add_option(
        parser,
        "--gc-young-objects",
        type=int,
        default=d.gc_young_objects,
        help="objects allocated between young collections of Python's cycle collector (Python's own "
        "default is 700, which makes full collections that pause every connection frequent; 0 keeps it)",
    )


def _kafka_tunables(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--kafka-connect-timeout-seconds",
        type=float,
        default=d.kafka_connect_timeout_seconds,
        help="how long connecting to Kafka (at start-up, and each admin or commit request) may take",
    )
    add_option(
        parser,
        "--kafka-group-id",
        default=d.kafka_group_id,
        help="the routers' Kafka consumer group (default <topic-prefix>.routers)",
    )
    add_option(
        parser,
        "--kafka-session-timeout-ms",
        type=int,
        default=d.kafka_session_timeout_ms,
        help="a router silent this long loses its partitions to the other routers",
    )
    add_option(
        parser,
        "--kafka-heartbeat-interval-ms",
        type=int,
        default=d.kafka_heartbeat_interval_ms,
        help="routers' consumer-group heartbeat (0: min(3000, session timeout / 3))",
    )
    add_option(
        parser,
        "--kafka-linger-ms",
        type=int,
        default=d.kafka_linger_ms,
        help="how long the Kafka producer waits to fill a batch before sending it",
    )


def _receipt_options(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--receipt-flush-ms",
        type=float,
        default=d.receipt_flush_ms,
        help="receipts are buffered and written (status table, Kafka events) in the background this often",
    )
    add_option(
        parser,
        "--receipt-buffer-entries",
        type=int,
        default=d.receipt_buffer_entries,
        help="receipts buffered at most before a flush; beyond it they are dropped and counted "
        "(pushplat_receipt_errors_total{what=buffer_full})",
    )
    add_option(
        parser,
        "--receipt-buffer-bytes",
        type=int,
        default=d.receipt_buffer_bytes,
        help="bytes of receipts buffered at most (about 160 each plus labels); beyond it they are dropped and counted",
    )


def _memory_store_bounds(parser: argparse.ArgumentParser, d: Config) -> None:
    """Bounds of the in-memory stores (pushplat dev): past one the oldest entries go first,
    counted in pushplat_store_evictions_total{store}; sizes are estimates from measured costs."""
    bounds = (
        ("--lane-bytes", d.lane_bytes, "bytes each in-process priority lane holds; a full lane answers Send "
         "with UNAVAILABLE"),
        ("--memory-inbox-bytes", d.memory_inbox_bytes, "bytes of at-least-once messages in the in-memory "
         "inbox, all devices together; past it the oldest message goes first (store=inbox)"),
        ("--memory-inbox-devices", d.memory_inbox_devices, "device-to-user bindings the in-memory inbox "
         "keeps; past it the least recently connected device is forgotten"),
        ("--memory-status-bytes", d.memory_status_bytes, "bytes of the in-memory message status table "
         "(GetStatus); past it the oldest messages are forgotten, NOT_FOUND (store=status)"),
        ("--memory-receipt-events", d.memory_receipt_events, "receipt events the in-memory ring of recent "
         "ones keeps (for inspection); past it the oldest go"),
        ("--memory-idempotency-bytes", d.memory_idempotency_bytes, "bytes of in-memory idempotency keys; "
         "past it the oldest keys go before their window ends (store=idempotency)"),
    )  # fmt: skip
    for flag, default, text in bounds:
        add_option(parser, flag, type=int, default=default, help=text)


DEV_WS_PORT = 50054


def _ws_options(parser: argparse.ArgumentParser, d: Config, dev: bool) -> None:
    add_option(
        parser,
        "--ws-port",
        type=int,
        default=DEV_WS_PORT if dev else d.ws_port,
        help="port for WebSocket devices (browsers: ws://HOST:PORT/connect, wss:// with --tls-cert) and "
        "the demo page (http://HOST:PORT/); 0 turns it off",
    )
    add_option(parser, "--ws-host", default="", help="interface for the WebSocket port alone (default: --host)")
    add_option(
        parser,
        "--ws-allowed-origins",
        repeat=True,
        metavar="ORIGIN",
        help="origins whose pages may open a WebSocket, e.g. https://app.example.com, https://*.example.com, "
        "http://localhost:* ('*': any site; not for production); default: pages on localhost, 127.0.0.1 "
        "and [::1] only. Clients that send no Origin (not browsers) are let through to the token check",
    )
    add_option(
        parser,
        "--ws-max-message-bytes",
        type=int,
        default=d.ws_max_message_bytes,
        help="largest WebSocket message a device may send (one ClientFrame); a larger one closes the "
        "connection with code 1009",
    )


def _edge_tunables(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="device streams this edge holds at most (size it from memory: about 54 KiB each); 0 is no limit",
    )
    add_option(
        parser,
        "--max-connects-per-second",
        type=float,
        default=d.max_connects_per_second,
        help="new device streams accepted per second (token bucket); only authenticated Hellos take a "
        "token; 0 is no limit",
    )
    add_option(
        parser,
        "--session-log-lines-per-second",
        type=float,
        default=d.session_log_lines_per_second,
        help="session.open and session.close log lines written per second at most; past it they are "
        'counted (pushplat_limits_hit_total{limit="session_log_lines"}) and the next line says how many '
        "were held back; 0 is no limit",
    )
    add_option(
        parser,
        "--heartbeat-misses",
        type=int,
        default=d.heartbeat_misses,
        help="a stream silent for this many heartbeat intervals is closed",
    )
    add_option(
        parser,
        "--hello-timeout-seconds",
        type=float,
        default=d.hello_timeout_seconds,
        help="a stream that sends no Hello within this is closed with DEADLINE_EXCEEDED",
    )
    add_option(
        parser,
        "--max-pending-hellos",
        type=int,
        default=d.max_pending_hellos,
        help="streams that may wait for their Hello at once; more get RESOURCE_EXHAUSTED (0: no limit)",
    )
    add_option(
        parser,
        "--max-age-jitter",
        type=float,
        default=d.max_age_jitter,
        help="each connection's maximum age is shortened by a random share of up to this fraction",
    )
    add_option(
        parser,
        "--reconnect-spread-ms",
        type=int,
        default=d.reconnect_spread_ms,
        help="GoAway(MAX_AGE) asks clients to reconnect within [0, this) ms",
    )
    add_option(
        parser,
        "--goaway-grace-seconds",
        type=float,
        default=d.goaway_grace_seconds,
        help="after a GoAway, a lingering stream is closed after this many seconds",
    )
    add_option(
        parser,
        "--registry-ttl-seconds",
        type=float,
        default=d.registry_ttl_seconds,
        help="TTL of this edge's registry entries, refreshed every third of it while it lives (entries the "
        "store lost are re-created then)",
    )
    add_option(
        parser,
        "--registry-check-seconds",
        type=float,
        default=d.registry_check_seconds,
        help="how often the edge checks that the registry still has its own entry, and re-creates all its "
        "sessions' entries at once if not (Redis restarted or flushed); 0: only at each refresh",
    )
    add_option(
        parser,
        "--device-memory-seconds",
        type=float,
        default=d.device_memory_seconds,
        help="how long after it last connected a device stays bound to its user (another user's Hello for "
        "it is PERMISSION_DENIED) and keeps getting the user's at-least-once messages",
    )


def _api_tunables(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--default-ttl-seconds",
        type=int,
        default=d.default_ttl_seconds,
        help="TTL of a message sent with ttl_seconds = 0",
    )
    add_option(
        parser,
        "--max-ttl-seconds",
        type=int,
        default=d.max_ttl_seconds,
        help="largest ttl_seconds accepted; above it Send is INVALID_ARGUMENT",
    )
    add_option(
        parser,
        "--idempotency-window-seconds",
        type=float,
        default=d.idempotency_window_seconds,
        help="a repeat Send with the same idempotency_key within this window is a duplicate",
    )
    add_option(
        parser,
        "--send-rate",
        type=float,
        default=d.send_rate,
        help="messages per second each sender (API-key identity) may send, per api process; "
        "over it, RESOURCE_EXHAUSTED with a retry-after-ms trailer (0: off)",
    )
    add_option(
        parser,
        "--send-burst",
        type=float,
        default=d.send_burst,
        help="messages a sender may send at once above --send-rate (0: one second's worth)",
    )
    add_option(
        parser,
        "--send-stream-window",
        type=int,
        default=d.send_stream_window,
        help="requests a Push.SendStream may have unanswered; when full the server stops reading the stream",
    )
    add_option(
        parser,
        "--send-stream-window-bytes",
        type=int,
        default=d.send_stream_window_bytes,
        help="bytes of requests a Push.SendStream may have unanswered (one request is always let in)",
    )


def _topic_options(parser: argparse.ArgumentParser, roles: Sequence[str], d: Config) -> None:
    add_option(
        parser,
        "--max-topics-per-device",
        type=int,
        default=d.max_topics_per_device,
        help="topics one device may hold; a subscribe past it is refused for that topic with RESOURCE_EXHAUSTED",
    )
    if "edge" not in roles:
        return
    add_option(
        parser,
        "--topic-changes-per-second",
        type=float,
        default=d.topic_changes_per_second,
        help="Subscribe/Unsubscribe frames a device may send per second (twice that at once); over it, its "
        "topics are refused with RESOURCE_EXHAUSTED (0: no limit)",
    )
    add_option(
        parser,
        "--metric-topics",
        repeat=True,
        metavar="TOPIC",
        help="topics (names or fnmatch patterns such as news.*) whose subscribers on this edge are counted in "
        "pushplat_topic_subscribers (default none: topic names can be high-cardinality)",
    )


def _router_tunables(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--router-batch-size",
        type=int,
        default=d.router_batch_size,
        help="messages a router takes from the lanes per batch (one Delivery.Deliver per edge per batch)",
    )
    add_option(
        parser,
        "--deliver-timeout-seconds",
        type=float,
        default=d.deliver_timeout_seconds,
        help="deadline of a Delivery.Deliver call to an edge; past it the batch counts as edge_unreachable "
        "and as a failure of that edge's circuit breaker",
    )
    add_option(
        parser,
        "--edge-queue-messages",
        type=int,
        default=d.edge_queue_messages,
        help="deliveries queued per edge in this router; more are refused (edge_queue_full; at-least-once "
        "messages stay in the inbox)",
    )
    add_option(
        parser,
        "--edge-queue-bytes",
        type=int,
        default=d.edge_queue_bytes,
        help="message bytes queued per edge in this router; more are refused like --edge-queue-messages",
    )
    add_option(
        parser,
        "--edge-breaker-failures",
        type=int,
        default=d.edge_breaker_failures,
        help="consecutive failed Deliver calls that open an edge's circuit breaker (deliveries to it are "
        "then refused at once)",
    )
    add_option(
        parser,
        "--edge-breaker-open-seconds",
        type=float,
        default=d.edge_breaker_open_seconds,
        help="how long an open circuit waits before it probes the edge (doubling per failed probe, up to 30 s)",
    )
    add_option(
        parser,
        "--router-max-in-flight",
        type=int,
        default=d.router_max_in_flight,
        help="records this router holds between fetching and committing them; at the cap it stops fetching",
    )
    add_option(
        parser,
        "--inbox-wait-replicas",
        type=int,
        default=d.inbox_wait_replicas,
        help="after each inbox write, wait (Redis WAIT) until this many replicas have it; 0: do not wait",
    )
    add_option(
        parser,
        "--inbox-wait-timeout-ms",
        type=int,
        default=d.inbox_wait_timeout_ms,
        help="longest wait for --inbox-wait-replicas; a shorter ack is counted and logged, not an error",
    )


def first_key(keys: str) -> str:
    """The key a client sends from a comma-separated list (the servers take one for rotation).
    A server entry NAME:KEY names the key's sender; the client sends only the KEY."""
    first = next((key.strip() for key in keys.split(",") if key.strip()), "")
    name, sep, key = first.partition(":")
    return key.strip() if sep else name


def _client_api_key(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--api-key",
        default="",
        type=first_key,
        metavar="KEY",
        help="API key sent as 'authorization: Bearer KEY'; of a comma-separated list, the first",
    )


def _public_tls_options(parser: argparse.ArgumentParser, d: Config) -> None:
    add_option(
        parser,
        "--tls-cert",
        default="",
        help="PEM certificate chain: serve the device and api ports over TLS (needs --tls-key)",
    )
    add_option(parser, "--tls-key", default="", help="PEM private key of --tls-cert (unencrypted)")
    add_option(
        parser,
        "--health-port",
        type=int,
        default=d.health_port,
        help="plaintext port serving only grpc.health.v1, for probes that cannot speak TLS; 0 turns it off",
    )


def _internal_auth_options(parser: argparse.ArgumentParser) -> None:
    add_option(
        parser,
        "--internal-secret",
        repeat=True,
        metavar="SECRET",
        help="shared secret between routers and edges on the delivery port (32+ bytes); the first is "
        "sent, any is accepted, for rotation",
    )
    add_option(
        parser,
        "--internal-tls-cert",
        default="",
        help="PEM certificate of this role for mutual TLS on the delivery port (with --internal-tls-key, "
        "--internal-ca)",
    )
    add_option(parser, "--internal-tls-key", default="", help="PEM private key of --internal-tls-cert")
    add_option(
        parser,
        "--internal-ca",
        default="",
        help="PEM CA that signs every role's internal certificate; only its certificates get in",
    )
    add_option(
        parser,
        "--internal-tls-server-name",
        default="",
        help="name to expect in edges' internal certificates (default: the host routers dial)",
    )
    add_option(
        parser,
        "--insecure-internal",
        switch=True,
        help="run without internal auth: anyone who reaches the delivery port can push to and evict "
        "any device (trusted networks only)",
    )


def _client_tls_options(parser: argparse.ArgumentParser, client_cert: bool) -> None:
    add_option(parser, "--tls", switch=True, help="connect over TLS, checking the server against the default roots")
    add_option(parser, "--tls-ca", default="", help="PEM CA file to check the server against (implies --tls)")
    add_option(
        parser, "--tls-server-name", default="", help="name to expect in the server's certificate (implies --tls)"
    )
    if client_cert:
        add_option(
            parser,
            "--tls-client-cert",
            default="",
            help="PEM client certificate for an api that requires mutual TLS (implies --tls)",
        )
        add_option(parser, "--tls-client-key", default="", help="PEM private key of --tls-client-cert")


def client_tls(args: argparse.Namespace) -> Any:
    """The SDK's TLS settings from the command line, or None for plaintext. Raises ValueError."""
    from pushplat_client import TLS

    cert, key = getattr(args, "tls_client_cert", ""), getattr(args, "tls_client_key", "")
    if not (args.tls or args.tls_ca or args.tls_server_name or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("--tls-client-cert and --tls-client-key go together")
    return TLS(ca=args.tls_ca or None, cert=cert or None, key=key or None, server_name=args.tls_server_name)


def _limits_epilog() -> str:
    from pushplat import limits

    return (
        "fixed limits on client input (INVALID_ARGUMENT when exceeded, counted in "
        f"pushplat_limits_hit_total): user/device/message ids 1-{limits.MAX_ID_BYTES} bytes of printable "
        f"text; {limits.MAX_LABELS} labels per message, keys up to {limits.MAX_LABEL_KEY_BYTES} bytes, "
        f"values up to {limits.MAX_LABEL_VALUE_BYTES} bytes; idempotency_key, collapse_key and "
        f"content_type up to {limits.MAX_KEY_BYTES} bytes; {limits.MAX_BATCH_REQUESTS} requests per "
        f"SendBatch; {limits.MAX_ACK_IDS} ids per Ack frame; device tokens up to "
        f"{limits.MAX_TOKEN_BYTES} bytes. --api-key NAME:KEY names the sender (keys of one name are one "
        "sender, for rotation); a bare KEY is a sender of its own."
    )


def label(text: str) -> tuple[str, str]:
    """One --label K=V; argparse turns the ValueError into a usage error that names the option."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


class OneLineErrors(argparse.ArgumentParser):
    """A wrong argument is one line: the server commands' usage alone is 70 lines, above it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="pushplat",
        description="pushplat: push messages to devices over long-lived gRPC streams.",
    )
    parser.add_argument("--version", action="version", version=f"pushplat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrors)

    dev = sub.add_parser(
        "dev",
        help="api, router and edge in one process on in-memory stores",
        description="Run the whole platform in one process on in-memory registry and lanes.",
        epilog=_limits_epilog(),
    )
    _server_options(dev, ("api", "router", "edge"), dev=True)
    for role, text in (
        ("api", "the Push service: validates sends and publishes them to the lanes"),
        ("router", "consumes the lanes and hands messages to edges"),
        ("edge", "holds device streams and pushes messages down them"),
    ):
        p = sub.add_parser(role, help=f"run only the {role} role", description=f"Run {text}.", epilog=_limits_epilog())
        _server_options(p, (role,), dev=False)

    send = sub.add_parser(
        "send",
        help='send one message; prints {"message_id": ...}',
        description="Send one message through Push.Send and print the response as JSON.",
    )
    add_option(send, "--api", default="127.0.0.1:50052", help="api address HOST:PORT")
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", help="send to every device of this user")
    target.add_argument("--device", help="send to this device only")
    target.add_argument(
        "--topic", help="send to every device subscribed to this topic (at-most-once: those connected now)"
    )
    send.add_argument(
        "--priority", choices=("high", "normal", "low"), default="normal", help="lane to travel in (default normal)"
    )
    send.add_argument("--ttl", type=int, default=0, help="seconds the message stays deliverable (0: server default)")
    send.add_argument("--collapse-key", default="", help="a newer message with this key replaces an older one")
    send.add_argument("--idempotency-key", default="", help="repeat sends with this key are deduplicated")
    send.add_argument("--content-type", default="text/plain", help="content type of the payload")
    send.add_argument("--at-least-once", action="store_true", help="keep in the inbox until the device acks")
    send.add_argument("--label", action="append", default=[], type=label, metavar="K=V", help="a label (repeatable)")
    _client_api_key(send)
    _client_tls_options(send, client_cert=True)
    send.add_argument("payload", help="message payload (text); '-' reads standard input")

    status = sub.add_parser(
        "status",
        help="show a message's last state on each target device",
        description="Print Push.GetStatus for MESSAGE_ID as JSON.",
    )
    add_option(status, "--api", default="127.0.0.1:50052", help="api address HOST:PORT")
    _client_api_key(status)
    _client_tls_options(status, client_cert=True)
    status.add_argument("message_id", help="the message_id that `pushplat send` printed")

    presence = sub.add_parser(
        "presence",
        help="list a user's connected devices and their edges",
        description="Print Push.GetPresence for USER as JSON.",
    )
    add_option(presence, "--api", default="127.0.0.1:50052", help="api address HOST:PORT")
    _client_api_key(presence)
    _client_tls_options(presence, client_cert=True)
    presence.add_argument("user", help="user id")

    listen = sub.add_parser(
        "listen",
        help="receive messages as a device; prints one JSON line each",
        description="Connect as a device, print one JSON line per message, ack each one.",
    )
    add_option(listen, "--edge", default="127.0.0.1:50051", help="edge address HOST:PORT")
    add_option(listen, "--user", default="", help="user id (auth off only)")
    add_option(listen, "--device", default="", help="device id (auth off only, required then)")
    add_option(listen, "--token", default="", help="device token from `pushplat token` (auth on)")
    _client_tls_options(listen, client_cert=False)
    listen.add_argument("--count", type=int, default=0, help="exit after this many messages (0: run until Ctrl-C)")
    listen.add_argument(
        "--topic",
        action="append",
        default=[],
        help="subscribe the device to this topic once connected (repeatable; subscriptions stay with the device)",
    )

    topics = sub.add_parser(
        "topics",
        help="list the topics a device is subscribed to",
        description="Print Push.GetSubscriptions for DEVICE as JSON.",
    )
    add_option(topics, "--api", default="127.0.0.1:50052", help="api address HOST:PORT")
    _client_api_key(topics)
    _client_tls_options(topics, client_cert=True)
    topics.add_argument("device", help="device id")

    token = sub.add_parser(
        "token",
        help="mint a device token for the configured secret",
        description="Mint an HS256 JWT with sub=USER, device=DEVICE and exp.",
    )
    add_option(
        token,
        "--secret",
        default=os.environ.get("PUSHPLAT_AUTH_SECRET", ""),
        help="HS256 secret (also read from PUSHPLAT_AUTH_SECRET)",
    )
    token.add_argument("--user", required=True, help="user id (the sub claim)")
    token.add_argument("--device", required=True, help="device id (the device claim)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    roles = ("api", "router", "edge") if args.command == "dev" else (args.command,)
    config = Config(roles=roles)
    for name in vars(args):
        if hasattr(config, name) and name != "roles":
            value = getattr(args, name)
            if value is not None:
                setattr(config, name, value)
    if "api" in roles:
        config.api_keys = _repeated(args, "--api-key")
    if hasattr(args, "internal_secret"):
        config.internal_secrets = _repeated(args, "--internal-secret")
    config.metric_label_keys = _repeated(args, "--metric-label-keys")
    if hasattr(args, "ws_allowed_origins"):
        config.ws_allowed_origins = _repeated(args, "--ws-allowed-origins")
    if hasattr(args, "metric_topics_env"):
        config.metric_topics = _repeated(args, "--metric-topics")
    if not config.edge_id:
        config.__post_init__()  # an empty --edge-id means "make one up", as Config() does
    return config


async def _run_server(config: Config, argv: Sequence[str] = ()) -> int:
    if config.workers < 1:
        print(f"pushplat {args_command(config)}: --workers must be at least 1, got {config.workers}", file=sys.stderr)
        return 2
    from pushplat.gc_policy import MAX_YOUNG_OBJECTS

    if not 0 <= config.gc_young_objects <= MAX_YOUNG_OBJECTS:
        print(
            f"pushplat {args_command(config)}: --gc-young-objects must be 0 to {MAX_YOUNG_OBJECTS}, "
            f"got {config.gc_young_objects}",
            file=sys.stderr,
        )
        return 2
    try:
        config.check()
    except ValueError as exc:
        print(f"pushplat {args_command(config)}: {exc}", file=sys.stderr)
        return 2
    if config.workers > 1:
        from pushplat.workers import supervise

        return await supervise(config, argv)
    from pushplat.gc_policy import GcPolicy
    from pushplat.server import Server, StartupError
    from pushplat.workers import die_with_supervisor

    die_with_supervisor()  # a no-op unless this process is a --workers worker

    gc_policy = GcPolicy(config.gc_young_objects)
    gc_policy.apply()
    server = Server(config)
    server.handle_signals()
    try:
        await server.start()
    except StartupError as exc:
        print(f"pushplat {args_command(config)}: {exc}", file=sys.stderr)
        _uncancel()
        await server.stop()
        return 0 if server.stop_requested else 2
    except asyncio.CancelledError:  # SIGTERM/SIGINT while starting (logged as server.signal)
        _uncancel()
        await server.stop()
        return 0
    if server.stop_requested:  # the signal's cancel was lost on the way, but the stop was not
        _uncancel()
        await server.drain()
        return 0
    gc_policy.log_started()
    await server.serve_until_signal()
    return 0


def _uncancel() -> None:
    """Forget a cancel that was handled, so timeouts in what follows still raise TimeoutError."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()


def args_command(config: Config) -> str:
    return "dev" if len(config.roles) > 1 else config.roles[0]


async def _send(args: argparse.Namespace) -> int:
    from pushplat_client import PushError, PushSender

    for flag, value in (("--user", args.user), ("--device", args.device), ("--topic", args.topic)):
        if value is not None and not value.strip():
            print(f"pushplat send: {flag} needs an id, got {value!r}", file=sys.stderr)
            return 2
    payload = sys.stdin.buffer.read() if args.payload == "-" else args.payload.encode()
    labels = dict(args.label)
    async with PushSender(args.api, api_key=args.api_key or None, tls=args.tls_settings) as sender:
        try:
            response = await sender.send(
                user_id=args.user,
                device_id=args.device,
                topic=args.topic,
                payload=payload,
                content_type=args.content_type,
                priority=args.priority,
                ttl_seconds=args.ttl,
                collapse_key=args.collapse_key,
                idempotency_key=args.idempotency_key,
                at_least_once=args.at_least_once,
                labels=labels,
            )
        except PushError as exc:
            print(f"pushplat send: {exc.code.name}: {exc.details}", file=sys.stderr)
            return 1
        except ValueError as exc:  # the SDK refuses the request before sending it (e.g. an empty --device)
            print(f"pushplat send: {exc}", file=sys.stderr)
            return 2
    print(json.dumps({"message_id": response.message_id, "duplicate": response.duplicate}))
    return 0


async def _query(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict
    from pushplat_client import PushError, PushSender

    async with PushSender(args.api, api_key=args.api_key or None, tls=args.tls_settings) as sender:
        try:
            if args.command == "status":
                reply = await sender.get_status(args.message_id)
            elif args.command == "topics":
                reply = await sender.get_subscriptions(args.device)
            else:
                reply = await sender.get_presence(args.user)
        except PushError as exc:
            print(f"pushplat {args.command}: {exc.code.name}: {exc.details}", file=sys.stderr)
            return 1
    print(json.dumps(MessageToDict(reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)))
    return 0


def message_json(message: Any) -> dict[str, Any]:
    from pushplat.messages import priority_name

    try:
        payload: str = message.payload.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        import base64

        payload, encoding = base64.b64encode(message.payload).decode(), "base64"
    out = {
        "message_id": message.message_id,
        "payload": payload,
        "priority": priority_name(message.priority),
        "created_at_ms": message.created_at_ms,
    }
    if encoding != "utf-8":
        out["payload_encoding"] = encoding
    for field in ("content_type", "collapse_key", "expires_at_ms", "topic"):
        if getattr(message, field):
            out[field] = getattr(message, field)
    if message.labels:
        out["labels"] = dict(message.labels)
    return out


async def _listen(args: argparse.Namespace) -> int:
    from pushplat_client import PushClient, PushError
    from pushplat_client.client import MAX_TOPICS_PER_FRAME

    if not args.token and not args.device:
        print("pushplat listen: give --token, or --device when auth is off", file=sys.stderr)
        return 2
    topics = list(dict.fromkeys(args.topic or ()))
    received = 0
    try:
        async with PushClient(
            args.edge, token=args.token or None, user_id=args.user, device_id=args.device, tls=args.tls_settings
        ) as client:
            # One Subscribe frame takes at most MAX_TOPICS_PER_FRAME topics: send as many as needed.
            for start in range(0, len(topics), MAX_TOPICS_PER_FRAME):
                result = await client.subscribe(*topics[start : start + MAX_TOPICS_PER_FRAME])
                for refused in result.refused:
                    print(f"pushplat listen: topic {refused.topic!r} refused: {refused.message}", file=sys.stderr)
                if result.refused:
                    return 1
            async for message in client:
                print(json.dumps(message_json(message)), flush=True)
                received += 1
                if args.count and received >= args.count:
                    break
    except PushError as exc:
        print(f"pushplat listen: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 1
    return 0


def _token(args: argparse.Namespace) -> int:
    from pushplat.auth import MIN_SECRET_BYTES, mint_token

    if not args.secret:
        print("pushplat token: give --secret or set PUSHPLAT_AUTH_SECRET", file=sys.stderr)
        return 2
    if len(args.secret.encode()) < MIN_SECRET_BYTES:
        print(f"pushplat token: warning: the secret is under {MIN_SECRET_BYTES} bytes", file=sys.stderr)
    print(mint_token(args.secret, args.user, args.device, args.ttl))
    return 0


def _run(coro: Any) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command they were given to, whose --help lists what it takes
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "env_errors", None):
        print(f"pushplat {args.command}: {args.env_errors[0]}", file=sys.stderr)
        return 2
    from pushplat.logs import setup_logging

    if args.command in ("dev", "api", "router", "edge"):
        config = config_from_args(args)
        setup_logging(config.log_level)
        if args.command == "dev" and args.delivery_port:
            logging.getLogger("pushplat.server").info(
                kv("dev.delivery_port_unused", port=args.delivery_port, detail="pushplat dev has no delivery port")
            )
        return _run(_run_server(config, argv))
    setup_logging("warning")
    if args.command in ("send", "listen", "status", "presence", "topics"):
        try:
            args.tls_settings = client_tls(args)
        except ValueError as exc:
            print(f"pushplat {args.command}: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "send":
            return _run(_send(args))
        if args.command == "listen":
            return _run(_listen(args))
        if args.command in ("status", "presence", "topics"):
            return _run(_query(args))
        return _token(args)
    except KeyboardInterrupt:
        return 130
