"""SessionLifecycle: everything that happens on a device stream, whatever its transport.

``serve(stream)`` runs one stream from its first frame to its end: the Hello and its auth,
admission control, the device's ownership, the Welcome, registration, the inbox replay, the
writes (the coroutine that calls serve is the writer), acks and pings (one reader task),
catch-up from the inbox, and the close. It raises ``Refused`` to end a stream with a status.
A transport implements ``DeviceStream`` (see edge/stream.py) and calls serve().
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine

import grpc
from google.protobuf.message import DecodeError
from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.auth import AuthError, Identity, IncompleteHello, PushAuthHandler
from pushplat.config import Config
from pushplat.edge.acks import AckProcessor
from pushplat.edge.admission import AdmissionControl
from pushplat.edge.hub import Hub
from pushplat.edge.lifetimes import SessionLifetimes
from pushplat.edge.registration import PushRegistrationHandler
from pushplat.edge.session import GoAwayReason, Session
from pushplat.edge.stream import DeviceStream, Dropped, Refused
from pushplat.edge.topics import EdgeTopics
from pushplat.inbox import Inbox
from pushplat.limits import MAX_ACK_IDS, LimitExceeded
from pushplat.logs import LogLimiter, clip, kv
from pushplat.memory_trim import MemoryTrimmer
from pushplat.messages import new_session_id, now_ms
from pushplat.metrics import (
    CONNECTS,
    DISCONNECTS,
    INBOX_SIZE,
    LIMITS_HIT,
    MESSAGES_OUT,
    OPEN_CONNECTIONS,
    OPEN_CONNECTIONS_BY_TRANSPORT,
    SEND_TO_PUSH,
    by_priority,
)
from pushplat.registry import DeviceOwned, RegistryUnavailable
from pushplat.token_bucket import TokenBucket
from pushplat.topics.memory import MemorySubscriptions

log = logging.getLogger("pushplat.edge")
_MESSAGES_OUT = by_priority(MESSAGES_OUT)
_PONG = edge_pb2.ServerFrame(pong=edge_pb2.Pong())  # never changed, so one object serves every stream
# Inbox messages fetched per catch-up (and per replay): the oldest first.
CATCH_UP_PAGE = 1000
# After a failed inbox read, the writer tries again this much later if no ack wakes it first.
CATCH_UP_RETRY_SECONDS = 1.0


def _owned_message(device_id: str) -> str:
    return (
        f"device {device_id!r} belongs to another user; a device id is bound to its first user until it "
        "has not connected for the device memory window (--device-memory-seconds)"
    )


def _retry_catch_up(session: Session) -> None:
    if not session.closed and session.catch_up_stalled:
        session.catch_up_stalled = False
        session.outbound.nudge()


class SessionLifecycle:
    def __init__(
        self,
        config: Config,
        hub: Hub,
        registration: PushRegistrationHandler,
        auth: PushAuthHandler,
        lifetimes: SessionLifetimes,
        inbox: Inbox,
        acks: AckProcessor,
        topics: EdgeTopics | None = None,
        trimmer: MemoryTrimmer | None = None,
    ) -> None:
        self.config = config
        self.trimmer = trimmer
        self.topics = topics or EdgeTopics(config, MemorySubscriptions(), hub.get)
        self.inbox = inbox
        self.hub = hub
        self.registration = registration
        self.auth = auth
        self.lifetimes = lifetimes
        self.acks = acks
        self.accepting = True
        self.admission = AdmissionControl(config.max_connections, config.max_connects_per_second)
        rate = config.session_log_lines_per_second
        self._session_log = TokenBucket(rate, max(rate, 1.0)) if rate > 0 else None
        self._session_lines_held = 0
        # Streams open that have not sent their Hello yet (bounded by max_pending_hellos).
        self.awaiting_hello = 0
        self._refusal_log = LogLimiter(interval_seconds=0.1)
        self._frame_bytes = config.frame_bytes
        self._counters: dict[tuple[object, ...], object] = {}

    # -- the lifecycle ------------------------------------------------------------------------

    async def serve(self, stream: DeviceStream) -> None:
        """Run one device stream to its end. Raises Refused to end it with that status."""
        self._admit_waiting(stream)
        hello = await self._read_hello(stream)
        if hello is None:
            return
        if not self.accepting:
            self._connect(stream, "draining")
            raise Refused(grpc.StatusCode.UNAVAILABLE, "edge is draining; reconnect elsewhere")
        # Who it is comes first, so that failed Hellos never spend the connect budget.
        identity = self._identify(stream, hello)
        refusal = self.admission.admit(self.hub.stream_count)
        if refusal is not None:
            self._connect(stream, "refused")
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{refusal.reason}; retry after {refusal.retry_after_ms} ms",
                refusal.retry_after_ms,
            )
        await self._claim_device(stream, identity)

        config = self.config
        session = Session(
            session_id=new_session_id(),
            user_id=identity.user_id,
            device_id=identity.device_id,
            edge_id=config.edge_id,
            queue_limit=config.session_queue_limit,
            queue_bytes=config.session_queue_bytes,
            frame_bytes=self._frame_bytes,
            in_flight_bytes=config.session_ack_memory_bytes,
            max_age_seconds=self.lifetimes.draw_max_age(),
            peer=stream.peer,
            transport=stream.transport,
        )
        try:
            await self._open(session, clip(hello.client_version))
            await self._run(stream, session)
        except DeviceOwned:  # the registry's own check: a route of another user is live
            session.close("device_owned")
            self._connect(stream, "device_owned")
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, _owned_message(session.device_id)) from None
        except RegistryUnavailable as exc:
            session.close("registry_unavailable")
            log.warning(kv("session.register_failed", device=session.device_id, error=str(exc)))
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the registry is unavailable; reconnect later") from None
        finally:
            session.close(session.close_reason or "stream_ended")
            await self._close(session)

    async def _run(self, stream: DeviceStream, session: Session) -> None:
        """The open session. This coroutine reads (acks and pings); a writer task runs only while
        there is something to write, so an idle session is this one coroutine and its pending
        read. Ends when the client finishes, when the session is closed and its queue flushed, or
        when it is killed (Session.end_stream() then cancels the read)."""
        outbound = session.outbound
        outbound.welcome(
            edge_pb2.ServerFrame(
                welcome=edge_pb2.Welcome(
                    session_id=session.session_id,
                    edge_id=session.edge_id,
                    heartbeat_interval_ms=self.config.heartbeat_interval_ms,
                    max_frame_bytes=self._frame_bytes,
                )
            )
        )
        session.owner = self
        session.stream = stream
        session.task = asyncio.current_task()
        try:
            if session.ending:
                return
            outbound.on_ready = session.wake
            session.wake()
            try:
                await self._read(stream, session)
                if session.writer is not None and not session.protocol_error:
                    await asyncio.shield(session.writer)  # the client is done: flush what is queued
            except asyncio.CancelledError:
                if not session.ending:
                    raise  # the transport cancelled the call
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            session.task = None
            outbound.on_ready = None
            writer = session.writer
            if writer is not None and session.protocol_error and session.writing:
                # The status can go out only after the write in flight (say, the Welcome).
                await asyncio.wait({writer}, timeout=self.config.goaway_grace_seconds)
            if writer is not None and not writer.done():
                stuck = session.writing
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                if stuck:
                    # The write may still be pending in the transport, which takes no status meanwhile.
                    raise Dropped(session.close_reason)
        if session.protocol_error:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, session.protocol_error)

    def _admit_waiting(self, stream: DeviceStream) -> None:
        limit = self.config.max_pending_hellos
        if limit and self.awaiting_hello >= limit:
            # Streams that never say Hello must not crowd out the ones that do: refuse early.
            LIMITS_HIT.labels("pending_hellos").inc()
            self._connect(stream, "refused")
            retry_ms = int(self.config.hello_timeout_seconds * 1000 * random.uniform(0.5, 1.5))
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{limit} streams are already waiting to send their Hello (--max-pending-hellos); "
                f"retry after {retry_ms} ms",
                retry_ms,
            )

    async def _read_hello(self, stream: DeviceStream) -> edge_pb2.Hello | None:
        self.awaiting_hello += 1
        try:
            try:
                first = await asyncio.wait_for(stream.read(), self.config.hello_timeout_seconds)
            except DecodeError as exc:
                self._connect(stream, "malformed")
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ClientFrame: {exc}") from None
            except TimeoutError:
                self._connect(stream, "no_hello")
                raise Refused(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no Hello within {self.config.hello_timeout_seconds:g}s of connecting",
                ) from None
        finally:
            self.awaiting_hello -= 1
        if first is stream.EOF:
            return None
        kind = first.WhichOneof("frame")
        if kind != "hello":
            self._connect(stream, "bad_first_frame")
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"the first frame must be Hello, got {kind or 'an empty frame'}"
            )
        return first.hello

    def _identify(self, stream: DeviceStream, hello: edge_pb2.Hello) -> Identity:
        try:
            return self.auth.identify(hello.token, hello.user_id, hello.device_id)
        except IncompleteHello as exc:
            self._connect(stream, "bad_hello")
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except AuthError as exc:
            self._connect(stream, "unauthenticated")
            self._log_refused(stream, "unauthenticated", str(exc))
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        except LimitExceeded as exc:
            exc.count()
            self._connect(stream, "invalid")
            self._log_refused(stream, "invalid", str(exc))
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

    async def _claim_device(self, stream: DeviceStream, identity: Identity) -> None:
        """A device id belongs to one user: bind it (or refresh the binding) before the session
        can replace anyone's stream or see the device's inbox; refuse another user's Hello."""
        current = self.hub.get(identity.device_id)
        owner = current.user_id if current is not None and current.user_id != identity.user_id else None
        if owner is None:
            try:
                owner = await self.inbox.enroll(identity.user_id, identity.device_id, self.config.device_memory_seconds)
            except Exception as exc:  # fail closed: an unchecked Hello could take a device over
                self.admission.refund()
                log.warning(kv("session.enroll_failed", device=identity.device_id, error=repr(exc)))
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE, "cannot check who owns this device right now; reconnect later"
                ) from None
        if owner is not None:
            self.admission.refund()
            self._connect(stream, "device_owned")
            self._log_refused(stream, "device_owned", f"device={identity.device_id} user={identity.user_id}")
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, _owned_message(identity.device_id))

    async def _open(self, session: Session, client_version: str) -> None:
        session.outbound.hold()
        replaced = self.hub.attach(session)
        if replaced is not None:
            replaced.go_away(GoAwayReason.REPLACED, 0, "a newer connection for this device took over", grace_seconds=0)
            replaced.close("replaced")
        OPEN_CONNECTIONS.set(len(self.hub))
        self._open_gauge(session.transport).inc()
        self._connect_counter("ok", session.transport).inc()
        await self.registration.register(session)
        # After registering (see edge/topics.py): the inbox replay and the device's topics.
        (replay, more), _ = await asyncio.gather(self._load_inbox(session), self.topics.restore(session))
        left = session.outbound.release(replay)
        session.behind = session.behind or more or left > 0
        self._log_session(
            "session.open",
            device=session.device_id,
            user=session.user_id,
            session=session.session_id,
            peer=session.peer,
            transport=session.transport,
            client=client_version,
            replaced=replaced.session_id if replaced else None,
            replay=len(replay) - left or None,
            replay_later=left or ("more" if more else None),
        )

    async def _load_inbox(self, session: Session) -> tuple[list[message_pb2.Message], bool]:
        """The device's unacked inbox, oldest first, and whether there is more than one page; a
        failing inbox only delays the replay."""
        try:
            replay = await self.inbox.pending(session.device_id, CATCH_UP_PAGE)
        except Exception as exc:
            log.warning(
                kv("inbox.replay_failed", device=session.device_id, session=session.session_id, error=repr(exc))
            )
            return [], False
        INBOX_SIZE.observe(len(replay))
        return replay, len(replay) >= CATCH_UP_PAGE

    def write_loop(self, session: Session) -> Coroutine[None, None, None]:
        """The writer task's coroutine: Session.wake() starts one when there is something to write."""
        return self._write(session)

    async def _write(self, session: Session) -> None:
        """Write what the session has queued, then end (the next frame starts a new writer). A
        closed queue, once flushed, ends the stream."""
        outbound = session.outbound
        stream = session.stream
        try:
            while True:
                if session.behind and not session.catch_up_stalled and outbound.bytes <= outbound.limit_bytes // 2:
                    await self._catch_up(session)
                taken = outbound.take()
                if taken is None:
                    session.end_stream()
                    return
                frames, batch = taken
                if not frames:
                    return
                if batch:
                    self._count_out(batch)
                    session.sent(batch)
                session.writing = True
                for frame in frames:
                    await stream.write(frame)
                session.writing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke under the write: the read side says how
            session.writing = False
            session.close(session.close_reason or "stream_error")
            session.end_stream()
            log.debug(kv("session.write_error", session=session.session_id, error=repr(exc)))
        finally:
            session.writer = None

    async def _catch_up(self, session: Session) -> None:
        """Queue what the session left in the device's inbox (its queue was full, or the replay
        was longer than one page), oldest first, skipping messages already sent or queued."""
        session.behind = False  # a refusal while we read sets it again
        try:
            page = await self.inbox.pending(session.device_id, CATCH_UP_PAGE)
        except Exception as exc:
            session.behind = True
            # Not in a tight loop: again after the next ack, or in CATCH_UP_RETRY_SECONDS when no
            # ack is coming (nothing in flight would otherwise leave the session stuck).
            session.catch_up_stalled = True
            asyncio.get_running_loop().call_later(CATCH_UP_RETRY_SECONDS, _retry_catch_up, session)
            log.warning(kv("inbox.catch_up_failed", device=session.device_id, error=repr(exc)))
            return
        if session.closed:
            return
        skip = session.outbound.queued_ids()
        pending = session.pending_acks or ()
        fresh = [m for m in page if m.message_id not in skip and m.message_id not in session.in_flight]
        if pending:
            acked = set(pending)
            fresh = [m for m in fresh if m.message_id not in acked]
        left = session.outbound.catch_up(fresh)
        if left or len(page) >= CATCH_UP_PAGE:
            session.behind = True
            # Nothing new in a full page: every message in it was sent and awaits its ack.
            session.catch_up_stalled = not fresh

    async def _read(self, stream: DeviceStream, session: Session) -> None:
        acks = self.acks
        outbound = session.outbound
        eof = stream.EOF
        try:
            while (frame := await stream.read()) is not eof:
                session.touch()
                kind = frame.WhichOneof("frame")  # type: ignore[union-attr]
                if kind == "ack":
                    ids = frame.ack.message_ids  # type: ignore[union-attr]
                    if len(ids) > MAX_ACK_IDS:
                        LIMITS_HIT.labels("ack_ids").inc()
                        session.protocol_error = (
                            f"an Ack carries {len(ids)} message ids; the limit is {MAX_ACK_IDS} per frame "
                            "(send several Ack frames)"
                        )
                        session.kill("protocol_error")
                        return
                    if ids and acks.add(session, ids):
                        await acks.drained(session)  # this device acks faster than the edge processes
                elif kind == "ping":
                    outbound.control(_PONG)
                elif kind == "subscribe" or kind == "unsubscribe":
                    change = getattr(frame, kind)
                    error = self.topics.frame_error(change.topics, change.request_id)
                    if error:
                        session.protocol_error = error
                        session.kill("protocol_error")
                        return
                    room = outbound.control_room()
                    if room is not None:  # answers wait to be written: read no more until they are
                        LIMITS_HIT.labels("session_control_frames").inc()
                        await room
                        if session.ending:
                            return
                    await self.topics.on_frame(session, kind == "subscribe", change.topics, change.request_id)
                elif kind == "hello":
                    # Silently ignored, a second Hello for another device or token looked accepted.
                    session.protocol_error = (
                        "Hello is sent once, as the stream's first frame; open a new stream to change "
                        "the device or the token"
                    )
                    session.kill("protocol_error")
                    return
                if session.ending:
                    return
            session.close(session.close_reason or "client_closed")
        except asyncio.CancelledError:
            raise
        except DecodeError as exc:
            session.protocol_error = f"malformed ClientFrame: {exc}"
            session.kill("malformed_frame")
        except Exception as exc:  # a broken stream ends only this session
            session.close(session.close_reason or "stream_error")
            log.debug(kv("session.read_error", session=session.session_id, error=repr(exc)))

    async def _close(self, session: Session) -> None:
        self.topics.forget(session)
        if self.hub.detach(session):
            await asyncio.shield(self.registration.unregister(session))
        OPEN_CONNECTIONS.set(len(self.hub))
        self._open_gauge(session.transport).dec()
        self._disconnect_counter(session.close_reason, session.transport).inc()
        queued = session.outbound.bytes
        dropped = len(session.outbound.drain_messages())
        if self.trimmer is not None:
            self.trimmer.released(queued)
        self._log_session(
            "session.close",
            device=session.device_id,
            session=session.session_id,
            reason=session.close_reason,
            seconds=round(time.monotonic() - session.opened_at, 3),
            unsent=dropped or None,
        )

    # -- metrics and logs ---------------------------------------------------------------------

    def _log_session(self, event: str, **fields: object) -> None:
        """A session.open/close line, unless over --session-log-lines-per-second: then it is
        counted, and the next line written says how many were held back."""
        if not log.isEnabledFor(logging.INFO):
            return
        if self._session_log is not None and not self._session_log.take():
            LIMITS_HIT.labels("session_log_lines").inc()
            self._session_lines_held += 1
            return
        held_back, self._session_lines_held = self._session_lines_held, 0
        log.info(kv(event, **fields, held_back=held_back or None))

    def _connect(self, stream: DeviceStream, result: str) -> None:
        self._connect_counter(result, stream.transport).inc()

    def _connect_counter(self, result: str, transport: str):  # type: ignore[no-untyped-def]
        return self._child(CONNECTS, result, transport)

    def _disconnect_counter(self, reason: str, transport: str):  # type: ignore[no-untyped-def]
        return self._child(DISCONNECTS, reason, transport)

    def _open_gauge(self, transport: str):  # type: ignore[no-untyped-def]
        return self._child(OPEN_CONNECTIONS_BY_TRANSPORT, transport)

    def _child(self, metric, *labels: str):  # type: ignore[no-untyped-def]
        # Children resolved once per label set, not per connection (labels() takes a lock and
        # builds a tuple key); the label values are the edge's own, so the cache stays small.
        key = (metric, *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = metric.labels(*labels)
        return child

    def _log_refused(self, stream: DeviceStream, result: str, reason: str) -> None:
        # Hostile clients choose how often this happens: at most 10 lines a second per kind.
        allowed, suppressed = self._refusal_log.allow(result)
        if allowed:
            log.info(
                kv("session.refused", peer=stream.peer, result=result, reason=reason, suppressed=suppressed or None)
            )

    @staticmethod
    def _count_out(messages: list[message_pb2.Message]) -> None:
        now = now_ms()
        for message in messages:
            _MESSAGES_OUT[message.priority].inc()
            SEND_TO_PUSH.observe(max(now - message.created_at_ms, 0) / 1000.0)
