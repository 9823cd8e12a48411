"""EdgeServicer: the device-facing `Edge.Connect` stream."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import DecodeError
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, message_pb2

from pushplat.auth import AuthError, Identity, IncompleteHello, PushAuthHandler
from pushplat.config import Config
from pushplat.edge.admission import AdmissionControl
from pushplat.edge.hub import Hub
from pushplat.edge.registration import PushRegistrationHandler
from pushplat.edge.session import GoAwayReason, Session
from pushplat.inbox import Inbox
from pushplat.limits import MAX_ACK_IDS, MAX_ID_BYTES, LimitExceeded
from pushplat.logs import LogLimiter, clip, kv
from pushplat.messages import new_session_id, now_ms
from pushplat.metrics import (
    ACKS,
    CONNECTS,
    DISCONNECTS,
    INBOX_SIZE,
    LIMITS_HIT,
    MESSAGES_OUT,
    OPEN_BY_TRANSPORT,
    OPEN_CONNECTIONS,
    SEND_TO_PUSH,
    SESSIONS_BY_TRANSPORT,
    by_priority,
)
from pushplat.receipts import Receipts, State, receipt
from pushplat.registry import DeviceOwned, RegistryUnavailable

log = logging.getLogger("pushplat.edge")
_MESSAGES_OUT = by_priority(MESSAGES_OUT)


def _owned_message(device_id: str) -> str:
    return (
        f"device {device_id!r} belongs to another user; a device id is bound to its first user until it "
        "has not connected for the device memory window (--device-memory-seconds)"
    )


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    def __init__(
        self,
        config: Config,
        hub: Hub,
        registration: PushRegistrationHandler,
        auth: PushAuthHandler,
        lifetimes: SessionLifetimes,
        inbox: Inbox,
        receipts: Receipts,
    ) -> None:
        self.config = config
        self.inbox = inbox
        self.receipts = receipts
        self.hub = hub
        self.registration = registration
        self.auth = auth
        self.lifetimes = lifetimes
        self.accepting = True
        self.admission = AdmissionControl(config.max_connections, config.max_connects_per_second)
        # Streams open that have not sent their Hello yet (bounded by max_pending_hellos).
        self.awaiting_hello = 0
        self._refusal_log = LogLimiter(interval_seconds=0.1)

    async def Connect(
        self, request_iterator: AsyncIterator[edge_pb2.ClientFrame], context: grpc.aio.ServicerContext
    ) -> None:
        await self._admit_waiting(context)
        frames = request_iterator.__aiter__()  # only now: an iterator never read warns at exit
        hello = await self._read_hello(frames, context)
        if hello is None:
            return
        if not self.accepting:
            CONNECTS.labels("draining").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "edge is draining; reconnect elsewhere")
        # Who it is comes first, so that failed Hellos never spend the connect budget.
        try:
            identity = self.auth.identify(hello.token, hello.user_id, hello.device_id)
        except IncompleteHello as exc:
            CONNECTS.labels("bad_hello").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AuthError as exc:
            CONNECTS.labels("unauthenticated").inc()
            self._log_refused(context, "unauthenticated", str(exc))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except LimitExceeded as exc:
            exc.count()
            CONNECTS.labels("invalid").inc()
            self._log_refused(context, "invalid", str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        refusal = self.admission.admit(self.hub.stream_count)
        if refusal is not None:
            CONNECTS.labels("refused").inc()
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{refusal.reason}; retry after {refusal.retry_after_ms} ms",
                trailing_metadata=(("retry-after-ms", str(refusal.retry_after_ms)),),
            )
        await self._claim_device(identity, context)

        session = Session(
            session_id=new_session_id(),
            user_id=identity.user_id,
            device_id=identity.device_id,
            edge_id=self.config.edge_id,
            queue_limit=self.config.session_queue_limit,
            max_age_seconds=self.lifetimes.draw_max_age(),
            peer=context.peer(),
            # The WebSocket transport hands in a context of its own (pushplat.edge.websocket).
            transport=getattr(context, "transport", "grpc"),
        )
        reader = writer = killed = None
        try:
            await self._open(session, clip(hello.client_version))
            reader = asyncio.create_task(self._read(frames, session), name=f"read-{session.session_id}")
            writer = asyncio.create_task(self._write(context, session), name=f"write-{session.session_id}")
            killed = asyncio.create_task(session.killed.wait())
            # A dead peer can leave a write pending forever; `killed` lets the sweeper end it.
            await asyncio.wait({writer, killed}, return_when=asyncio.FIRST_COMPLETED)
            if session.protocol_error:
                # gRPC takes one send operation at a time: a status sent while the writer's
                # write (say, the Welcome) is in flight fails and leaves the stream hanging. The
                # session is closed, so the writer ends after that write.
                await asyncio.wait({writer}, timeout=self.config.goaway_grace_seconds)
                if writer.done():
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, session.protocol_error)
        except DeviceOwned:  # the registry's own check: a route of another user is live
            session.close("device_owned")
            CONNECTS.labels("device_owned").inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _owned_message(session.device_id))
        except RegistryUnavailable as exc:
            session.close("registry_unavailable")
            log.warning(kv("session.register_failed", device=session.device_id, error=str(exc)))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the registry is unavailable; reconnect later")
        finally:
            tasks = [t for t in (reader, writer, killed) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            session.close(session.close_reason or "stream_ended")
            await self._close(session)

    async def _claim_device(self, identity: Identity, context: grpc.aio.ServicerContext) -> None:
        """A device id belongs to one user: bind it (or refresh the binding) before the session
        can replace anyone's stream or see the device's inbox; refuse another user's Hello."""
        current = self.hub.get(identity.device_id)
        owner = current.user_id if current is not None and current.user_id != identity.user_id else None
        if owner is None:
            try:
                owner = await self.inbox.enroll(
                    identity.user_id, identity.device_id, self.config.device_memory_seconds
                )
            except Exception as exc:  # fail closed: an unchecked Hello could take a device over
                self.admission.refund()
                log.warning(kv("session.enroll_failed", device=identity.device_id, error=repr(exc)))
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "cannot check who owns this device right now; reconnect later"
                )
        if owner is not None:
            self.admission.refund()
            CONNECTS.labels("device_owned").inc()
            self._log_refused(context, "device_owned", f"device={identity.device_id} user={identity.user_id}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _owned_message(identity.device_id))

    def _log_refused(self, context: grpc.aio.ServicerContext, result: str, reason: str) -> None:
        # Hostile clients choose how often this happens: at most 10 lines a second per kind.
        allowed, suppressed = self._refusal_log.allow(result)
        if allowed:
            log.info(
                kv("session.refused", peer=context.peer(), result=result, reason=reason, suppressed=suppressed or None)
            )

    async def _write(self, context: grpc.aio.ServicerContext, session: Session) -> None:
        await context.write(
            edge_pb2.ServerFrame(
                welcome=edge_pb2.Welcome(
                    session_id=session.session_id,
                    edge_id=self.config.edge_id,
                    heartbeat_interval_ms=self.config.heartbeat_interval_ms,
                )
            )
        )
        while (batch := await session.outbound.next_frames()) is not None:
            for frame in batch:
                if frame.HasField("pushes"):
                    self._count_out(frame.pushes.messages)
                    session.sent(frame.pushes.messages)
                await context.write(frame)

    async def _admit_waiting(self, context: grpc.aio.ServicerContext) -> None:
        limit = self.config.max_pending_hellos
        if limit and self.awaiting_hello >= limit:
            # Streams that never say Hello must not crowd out the ones that do: refuse early.
            LIMITS_HIT.labels("pending_hellos").inc()
            CONNECTS.labels("refused").inc()
            retry_ms = int(self.config.hello_timeout_seconds * 1000 * random.uniform(0.5, 1.5))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{limit} streams are already waiting to send their Hello (--max-pending-hellos); "
                f"retry after {retry_ms} ms",
                trailing_metadata=(("retry-after-ms", str(retry_ms)),),
            )

    async def _read_hello(
        self, frames: AsyncIterator[edge_pb2.ClientFrame], context: grpc.aio.ServicerContext
    ) -> edge_pb2.Hello | None:
        self.awaiting_hello += 1
        try:
            return await self._first_frame(frames, context)
        finally:
            self.awaiting_hello -= 1

    async def _first_frame(
        self, frames: AsyncIterator[edge_pb2.ClientFrame], context: grpc.aio.ServicerContext
    ) -> edge_pb2.Hello | None:
        try:
            first = await asyncio.wait_for(anext(frames), self.config.hello_timeout_seconds)
        except StopAsyncIteration:
            return None
        except DecodeError as exc:
            CONNECTS.labels("malformed").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ClientFrame: {exc}")
        except TimeoutError:
            CONNECTS.labels("no_hello").inc()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Hello within {self.config.hello_timeout_seconds:g}s of connecting",
            )
        if first.WhichOneof("frame") != "hello":
            CONNECTS.labels("bad_first_frame").inc()
            got = first.WhichOneof("frame") or "an empty frame"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the first frame must be Hello, got {got}")
        return first.hello

    async def _open(self, session: Session, client_version: str) -> None:
        session.outbound.hold()
        replaced = self.hub.attach(session)
        if replaced is not None:
            replaced.go_away(GoAwayReason.REPLACED, 0, "a newer connection for this device took over", grace_seconds=0)
            replaced.close("replaced")
        OPEN_CONNECTIONS.set(len(self.hub))
        CONNECTS.labels("ok").inc()
        OPEN_BY_TRANSPORT.labels(session.transport).inc()
        SESSIONS_BY_TRANSPORT.labels(session.transport).inc()
        session.counted_open = True
        await self.registration.register(session)
        replay = await self._load_inbox(session)
        session.outbound.release(replay)
        log.info(
            kv(
                "session.open",
                device=session.device_id,
                user=session.user_id,
                session=session.session_id,
                peer=session.peer,
                client=client_version,
                replaced=replaced.session_id if replaced else None,
                replay=len(replay) or None,
            )
        )

    async def _load_inbox(self, session: Session) -> list[message_pb2.Message]:
        """The device's unacked inbox, oldest first; a failing inbox only delays the replay."""
        try:
            replay = await self.inbox.pending(session.device_id)
        except Exception as exc:
            log.warning(
                kv("inbox.replay_failed", device=session.device_id, session=session.session_id, error=repr(exc))
            )
            return []
        INBOX_SIZE.observe(len(replay))
        return replay

    async def _close(self, session: Session) -> None:
        if self.hub.detach(session):
            await asyncio.shield(self.registration.unregister(session))
        OPEN_CONNECTIONS.set(len(self.hub))
        if session.counted_open:
            OPEN_BY_TRANSPORT.labels(session.transport).dec()
        DISCONNECTS.labels(session.close_reason).inc()
        dropped = len(session.outbound.drain_messages())
        log.info(
            kv(
                "session.close",
                device=session.device_id,
                session=session.session_id,
                reason=session.close_reason,
                seconds=round(time.monotonic() - session.opened_at, 3),
                unsent=dropped or None,
            )
        )

    async def _read(self, frames: AsyncIterator[edge_pb2.ClientFrame], session: Session) -> None:
        try:
            async for frame in frames:
                session.touch()
                kind = frame.WhichOneof("frame")
                if kind == "ping":
                    session.outbound.control(edge_pb2.ServerFrame(pong=edge_pb2.Pong()))
                elif kind == "ack":
                    ids = frame.ack.message_ids
                    if len(ids) > MAX_ACK_IDS:
                        LIMITS_HIT.labels("ack_ids").inc()
                        session.protocol_error = (
                            f"an Ack carries {len(ids)} message ids; the limit is {MAX_ACK_IDS} per frame "
                            "(send several Ack frames)"
                        )
                        session.kill("protocol_error")
                        return
                    await self.on_ack(session, list(ids))
                elif kind == "hello":
                    log.debug(kv("session.extra_hello", device=session.device_id, session=session.session_id))
            session.close(session.close_reason or "client_closed")
        except asyncio.CancelledError:
            raise
        except DecodeError as exc:
            session.protocol_error = f"malformed ClientFrame: {exc}"
            session.kill("malformed_frame")
        except Exception as exc:  # a broken stream ends only this session
            session.close(session.close_reason or "stream_error")
            log.debug(kv("session.read_error", session=session.session_id, error=repr(exc)))

    async def on_ack(self, session: Session, message_ids: list[str]) -> None:
        """An ack counts only for a message pushed on this session or waiting in this device's
        inbox: those leave the inbox and get an ACKED receipt; any other id changes nothing."""
        pushed: list[tuple[str, dict[str, str]]] = []
        stored: list[str] = []  # ids that may be in the inbox
        for mid in dict.fromkeys(message_ids):
            entry = session.in_flight.pop(mid, None)
            if entry is not None:
                pushed.append((mid, entry[0]))
                if entry[1]:  # at-least-once: in the inbox too
                    stored.append(mid)
            elif 0 < len(mid) <= MAX_ID_BYTES:
                stored.append(mid)  # not pushed on this session; counts only if the inbox had it
        acked = pushed
        if stored:
            try:
                removed = await self.inbox.ack(session.device_id, stored)
            except Exception as exc:
                # The entry stays and is replayed later; the SDK drops the duplicate.
                log.warning(kv("inbox.ack_failed", device=session.device_id, error=repr(exc)))
                removed = []
            known = {mid for mid, _ in pushed}
            acked = pushed + [(mid, {}) for mid in removed if mid not in known]
        if not acked:
            return
        ACKS.inc(len(acked))
        await self.receipts.emit(
            [
                receipt(
                    mid,
                    State.DELIVERY_STATE_ACKED,
                    device_id=session.device_id,
                    user_id=session.user_id,
                    edge_id=session.edge_id,
                    labels=labels,
                )
                for mid, labels in acked
            ]
        )

    @staticmethod
    def _count_out(messages: list) -> None:
        now = now_ms()
        for message in messages:
            _MESSAGES_OUT[message.priority].inc()
            SEND_TO_PUSH.observe(max(now - message.created_at_ms, 0) / 1000.0)


class SessionLifetimes:
    """Randomized lifetimes and the sweeper that enforces them and the heartbeat timeout.

    One sweeper per edge instead of a timer per session keeps idle connections cheap.
    """

    def __init__(self, config: Config, hub: Hub, rng: random.Random | None = None) -> None:
        self.config = config
        self.hub = hub
        self.rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

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
            elif now >= session.expires_at:
                session.go_away(
                    GoAwayReason.MAX_AGE,
                    self.draw_reconnect_ms(),
                    "connection reached its maximum age",
                    grace_seconds=self.config.goaway_grace_seconds,
                )

    async def _sweep_loop(self) -> None:
        interval = min(1.0, self.config.heartbeat_interval_ms / 4000.0)
        while True:
            await asyncio.sleep(interval)
            self.sweep()
