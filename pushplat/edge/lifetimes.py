"""SessionLifetimes: randomized lifetimes and the one sweeper that enforces them, the heartbeat
timeout and the slow-consumer rule.

One sweeper per edge instead of a timer per session keeps idle connections cheap.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from pushplat.config import Config
from pushplat.edge.hub import Hub
from pushplat.edge.session import GoAwayReason, Session
from pushplat.logs import LogLimiter, kv
from pushplat.metrics import LIMITS_HIT

log = logging.getLogger("pushplat.edge")


class SessionLifetimes:
    def __init__(self, config: Config, hub: Hub, rng: random.Random | None = None) -> None:
        self.config = config
        self.hub = hub
        self.rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._slow_log = LogLimiter(interval_seconds=1.0)

    def draw_max_age(self) -> float:
        """Max age minus a random share of up to max_age_jitter, so reconnects don't line up."""
        return self.config.max_age_seconds * (1.0 - self.rng.uniform(0.0, self.config.max_age_jitter))

    def draw_reconnect_ms(self) -> int:
        return int(self.rng.uniform(0, self.config.reconnect_spread_ms))

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_loop(), name="session-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def sweep(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        timeout = self.config.heartbeat_timeout_seconds
        slow = self.config.slow_consumer_seconds
        for session in self.hub.streams():
            if session.closed:
                # Closed but its stream has not ended: a write is stuck on a slow or dead peer.
                if session.closed_at is not None and now - session.closed_at > self.config.goaway_grace_seconds:
                    session.kill(session.close_reason)
                continue
            if session.goaway_deadline is not None:
                if now >= session.goaway_deadline:
                    session.kill(session.close_reason or "goaway_expired")
            elif now - session.last_seen > timeout:
                session.kill("heartbeat_timeout")
            elif (full := session.outbound.full_since) is not None and now - full >= slow:
                self.slow_consumer(session, now - full)
            elif now >= session.expires_at:
                session.go_away(
                    GoAwayReason.MAX_AGE,
                    self.draw_reconnect_ms(),
                    "connection reached its maximum age",
                    grace_seconds=self.config.goaway_grace_seconds,
                )

    def slow_consumer(self, session: Session, seconds: float) -> None:
        """The device has been over its queue budget too long: it reads slower than it is sent
        to. Disconnect it; its at-least-once messages wait in the inbox for the reconnect."""
        LIMITS_HIT.labels("session_queue_bytes").inc()
        queue = session.outbound
        detail = (
            f"the device's queue stayed over its budget ({queue.limit_bytes} bytes, --session-queue-bytes, or "
            f"{queue.limit} messages) for {seconds:.1f}s (--slow-consumer-seconds): it reads slower than "
            "messages arrive; at-least-once messages wait in the inbox and are replayed on reconnect"
        )
        session.go_away(
            GoAwayReason.SLOW_CONSUMER,
            self.draw_reconnect_ms(),
            detail,
            grace_seconds=self.config.goaway_grace_seconds,
        )
        session.close("slow_consumer")
        allowed, suppressed = self._slow_log.allow("slow_consumer")
        if allowed:
            log.warning(
                kv(
                    "session.slow_consumer",
                    device=session.device_id,
                    session=session.session_id,
                    queued_bytes=queue.bytes,
                    queued=len(queue),
                    over_s=round(seconds, 1),
                    suppressed=suppressed or None,
                )
            )

    async def _sweep_loop(self) -> None:
        interval = min(1.0, self.config.heartbeat_interval_ms / 4000.0, self.config.slow_consumer_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            self.sweep()
