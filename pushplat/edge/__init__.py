"""The edge role: device streams, the local hub, registration and the Delivery service."""

from __future__ import annotations

import logging
import time

from pushplat.auth import PushAuthHandler
from pushplat.config import Config
from pushplat.edge.acks import AckProcessor
from pushplat.edge.delivery import DeliveryServicer
from pushplat.edge.healing import InboxRecheck
from pushplat.edge.hub import Hub
from pushplat.edge.lifecycle import SessionLifecycle
from pushplat.edge.lifetimes import SessionLifetimes
from pushplat.edge.registration import PushRegistrationHandler
from pushplat.edge.servicer import EdgeServicer
from pushplat.edge.session import GoAwayReason
from pushplat.edge.topics import EdgeTopics
from pushplat.edge_link import EdgeLink
from pushplat.inbox import Inbox
from pushplat.limits import largest_frame_message
from pushplat.logs import kv
from pushplat.memory_trim import MIN_INTERVAL_SECONDS, MemoryTrimmer, glibc_trim
from pushplat.receipts import Receipts
from pushplat.registry import Registry
from pushplat.topics import Subscriptions
from pushplat.topics.memory import MemorySubscriptions
from pushplat.waits import wait_event

log = logging.getLogger("pushplat.edge")

__all__ = ["EdgeNode", "check_edge_limits"]


def check_edge_limits(config: Config) -> None:
    """Raise ValueError for byte limits that cannot carry a maximum-size message."""
    needed = largest_frame_message(config.max_payload_bytes)
    if config.max_frame_bytes < 0 or (config.max_frame_bytes and config.max_frame_bytes < needed):
        raise ValueError(
            f"--max-frame-bytes {config.max_frame_bytes} cannot carry a message with a payload of "
            f"--max-payload-bytes {config.max_payload_bytes} (it needs {needed}: the payload plus 8 KiB for the "
            "other fields); raise it, or give 0 for the default"
        )
    if config.session_queue_bytes < needed:
        raise ValueError(
            f"--session-queue-bytes {config.session_queue_bytes} cannot hold one message with a payload of "
            f"--max-payload-bytes {config.max_payload_bytes}; give at least {needed}"
        )
    if config.session_queue_limit < 1:
        raise ValueError(f"--session-queue-limit must be at least 1, got {config.session_queue_limit}")
    if not config.slow_consumer_seconds > 0:
        raise ValueError(f"--slow-consumer-seconds must be > 0, got {config.slow_consumer_seconds:g}")
    if not (config.memory_trim_seconds == 0 or config.memory_trim_seconds >= MIN_INTERVAL_SECONDS):
        raise ValueError(
            f"--memory-trim-seconds must be 0 (off) or at least {MIN_INTERVAL_SECONDS:g}, "
            f"got {config.memory_trim_seconds:g}"
        )
    if config.session_ack_memory_bytes < 0:
        raise ValueError(f"--session-ack-memory-bytes must be >= 0, got {config.session_ack_memory_bytes}")


class EdgeNode:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        inbox: Inbox,
        receipts: Receipts,
        link: EdgeLink,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        """link reaches other edges (to evict sessions a connection here replaced). Raises
        ValueError for limits that do not fit together (see check_edge_limits)."""
        check_edge_limits(config)
        self.config = config
        self.hub = Hub()
        self.topics = EdgeTopics(config, subscriptions or MemorySubscriptions(), self.hub.get, receipts.record)
        self.registration = PushRegistrationHandler(
            registry,
            self.hub,
            config.edge_id,
            config.registry_ttl_seconds,
            link,
            check_seconds=config.registry_check_seconds,
            on_healed=InboxRecheck(inbox, config.device_memory_seconds),
        )
        self.lifetimes = SessionLifetimes(config, self.hub)
        self.acks = AckProcessor(inbox, receipts, self.topics)
        # A slow consumer is disconnected only while over half its queue budget: one is a wave.
        self.trimmer = MemoryTrimmer(config.memory_trim_seconds, config.session_queue_bytes // 2, glibc_trim())
        # Every transport serves its streams through this one lifecycle (see edge/stream.py):
        # gRPC here, WebSocket in edge/websocket.py (pushplat.server starts it on --ws-port).
        self.lifecycle = SessionLifecycle(
            config,
            self.hub,
            self.registration,
            PushAuthHandler(config.auth_secret),
            self.lifetimes,
            inbox,
            self.acks,
            self.topics,
            self.trimmer,
        )
        self.servicer = EdgeServicer(self.lifecycle)
        self.delivery = DeliveryServicer(self.hub, config.edge_id, self.topics)

    async def start(self, delivery_address: str) -> None:
        """Publish where routers reach this edge, then start the lifetime sweeper."""
        await self.registration.start(delivery_address)
        self.lifetimes.start()
        self.acks.start()
        log.info(self.trimmer.describe())

    async def drain(self, window_seconds: float) -> None:
        """Stop accepting, leave the registry, and spread the clients' reconnects over the window."""
        self.lifecycle.accepting = False
        await self.registration.withdraw_edge()
        sessions = list(self.hub)
        count = len(sessions)
        log.info(kv("edge.drain_start", edge=self.config.edge_id, sessions=count, window_s=window_seconds))
        # Send the GoAways evenly over the window rather than all at once: clients stay served
        # until their turn and the peak reconnect rate elsewhere stays at clients / window.
        started = time.monotonic()
        for i, session in enumerate(sessions):
            wait = started + window_seconds * i / max(count, 1) - time.monotonic()
            # Clients that leave on their own end the drain early: an empty edge has nothing to spread.
            if await wait_event(self.hub.empty, wait):
                break
            session.go_away(
                GoAwayReason.DRAINING,
                0,
                "edge is shutting down",
                grace_seconds=self.config.goaway_grace_seconds,
            )
        remaining = started + window_seconds + self.config.goaway_grace_seconds - time.monotonic()
        await wait_event(self.hub.empty, remaining)
        left = self.hub.stream_count
        log.info(kv("edge.drain_done", edge=self.config.edge_id, remaining=left))

    async def stop(self) -> None:
        await self.topics.close()
        await self.lifetimes.stop()
        await self.registration.stop()
        for session in self.hub.streams():
            session.kill("shutdown")
        await self.acks.stop()
        await self.trimmer.close()
