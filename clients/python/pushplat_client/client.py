"""PushClient: the device side of ``Edge.Connect``.

One background task owns the connection: it dials the edge, says Hello, reads frames,
heartbeats, and reconnects (exponential backoff with full jitter, or the edge's GoAway
delay). The application just iterates the client for messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import grpc

from .backoff import Backoff
from .dedup import RecentIds
from .errors import PushError, error_from_rpc
from .tls import TLS, ChannelFactory
from .v1 import edge_pb2, edge_pb2_grpc, message_pb2

__all__ = ["PushClient"]

log = logging.getLogger("pushplat_client")

DEFAULT_HEARTBEAT_INTERVAL: Final = 30.0
# A connection is dead after this many heartbeat intervals without any frame from the edge.
MISSED_HEARTBEATS: Final = 3
# Acks wait this long for company, so a burst of messages costs one Ack frame, not many.
ACK_LINGER: Final = 0.01
DEFAULT_MAX_BUFFERED: Final = 1_000
# The most message ids the edge takes in one Ack frame; more go in several frames. As many
# waiting acks go out at once, without the linger.
MAX_ACK_IDS: Final = 1000
# gRPC's default receive limit, used until an edge announces larger frames in its Welcome
# (max_frame_bytes); the client then reconnects at once with a limit to match.
DEFAULT_RECEIVE_LIMIT: Final = 4 * 1024 * 1024
_RECEIVE_LIMIT_OPTION: Final = "grpc.max_receive_message_length"
# The most topics the edge takes in one Subscribe/Unsubscribe frame.
MAX_TOPICS_PER_FRAME: Final = 100


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_END: Final = _Sentinel("end")  # in the message queue: iteration is over
_FLUSH_ACKS: Final = _Sentinel("flush-acks")  # in the write queue: send pending acks
_HALF_CLOSE: Final = _Sentinel("half-close")  # in the write queue: we are done writing

_PING: Final = edge_pb2.ClientFrame(ping=edge_pb2.Ping())

_WriteItem = edge_pb2.ClientFrame | _Sentinel


class PushClient:
    """Holds a stream to an edge and yields the messages pushed to this device.

    ::

        async with PushClient("127.0.0.1:50051", token=token) as client:
            async for message in client:
                handle(message)

    With ``auto_ack`` (the default) a message is acked when the iterator hands it over. With
    ``auto_ack=False`` the app acks once it is done, so at-least-once covers its own crash::

        async for message in client:
            async with client.processing(message):   # acked on success only
                await handle(message)

    At most ``max_buffered`` messages wait for the app; while that many wait, the client stops
    reading the stream, and gRPC flow control holds the rest at the edge. Messages whose
    ``expires_at_ms`` has passed are dropped, never handed over.
    Messages already seen (by ``message_id``) are acked again but not handed over twice.
    Non-retriable errors (bad token, bad request) end the iteration by raising
    :class:`PushError` / :class:`AuthError`; everything else is retried.
    """

    def __init__(
        self,
        edge: str | Sequence[str],
        *,
        token: str | None = None,
        user_id: str = "",
        device_id: str = "",
        client_version: str = "pushplat-python/0.1",
        auto_ack: bool = True,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        dedup_capacity: int = 10_000,
        backoff: Backoff | None = None,
        heartbeat_interval: float | None = None,
        reconnect: bool = True,
        tls: TLS | bool | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        connect_timeout: float = 10.0,
    ) -> None:
        if not edge:
            raise ValueError("PushClient needs the edge address, e.g. '127.0.0.1:50051'")
        if not token and not device_id:
            raise ValueError("PushClient needs a token, or a device_id (with user_id) when the edge runs without auth")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {heartbeat_interval!r}")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0, got {connect_timeout!r}")
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered!r}")

        # Several addresses ("h1:p,h2:p" or a list): each attempt tries the next one, so a
        # client without a load balancer still moves to another edge when one dies or drains.
        self._edges = [e.strip() for e in (edge.split(",") if isinstance(edge, str) else edge) if e.strip()]
        if not self._edges:
            raise ValueError("PushClient needs the edge address, e.g. '127.0.0.1:50051'")
        self._edge_index = random.randrange(len(self._edges))
        self._edge = self._edges[self._edge_index]
        self._hello = edge_pb2.Hello(
            token=token or "", user_id=user_id, device_id=device_id, client_version=client_version
        )
        self._device_id = device_id
        self._auto_ack = auto_ack
        self._backoff = backoff if backoff is not None else Backoff()
        self._heartbeat_interval = heartbeat_interval
        self._reconnect = reconnect
        # tls=True: TLS against the default roots; TLS(ca=...) for your own CA.
        self._channels = ChannelFactory(tls, list(channel_options))
        # The receive limit follows the edge's frame cap, unless the caller set one.
        self._receive_limit_pinned = any(name == _RECEIVE_LIMIT_OPTION for name, _ in channel_options)
        self._receive_limit = DEFAULT_RECEIVE_LIMIT
        self._connect_timeout = connect_timeout

        # Ids handed to us before (dedup), and ids the application has acked: a redelivery
        # of an acked message is acked again, one not yet acked waits for the app's ack.
        self._seen = RecentIds(dedup_capacity)
        self._acked = RecentIds(dedup_capacity)
        # Ordered set of ids still to send; survives reconnects (acks are by id, not session).
        self._pending_acks: dict[str, None] = {}
        self._flush_queued = False
        self._acks_full: asyncio.Future[None] | None = None  # set while a flush lingers

        # Bounded by max_buffered messages (plus the one end marker): see _buffer().
        self._messages: asyncio.Queue[message_pb2.Message | _Sentinel] = asyncio.Queue()
        self._max_buffered = max_buffered
        self._room = asyncio.Event()
        self._waiting_for_app = False
        self._buffered = 0  # messages (not end markers) in _messages
        self._expired = 0
        self._out: asyncio.Queue[_WriteItem] | None = None  # the live session's write queue
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: PushError | None = None
        self._closing = False
        self._closed = False
        self._last_rx = 0.0

        self._session_id = ""
        self._edge_id = ""
        self._connects = 0
        self._last_go_away: edge_pb2.GoAway | None = None
        # Subscribe/Unsubscribe frames sent on the live stream and not answered yet, by request_id.
        self._topic_waiters: dict[str, asyncio.Future[edge_pb2.SubscriptionResult]] = {}
        self._topic_requests = 0

    # -- public surface ---------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The current (or last) session id from Welcome; "" before the first connect."""
        return self._session_id

    @property
    def edge_id(self) -> str:
        return self._edge_id

    @property
    def connects(self) -> int:
        """How many times a Welcome was received (1 + number of successful reconnects)."""
        return self._connects

    @property
    def last_go_away(self) -> edge_pb2.GoAway | None:
        return self._last_go_away

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def buffered(self) -> int:
        """Messages received and waiting for the app (at most ``max_buffered``)."""
        return self._buffered

    @property
    def waiting_for_app(self) -> bool:
        """True while the buffer is full and the client has stopped reading the stream."""
        return self._waiting_for_app

    @property
    def expired(self) -> int:
        """Messages dropped because their ``expires_at_ms`` had passed before the app got them."""
        return self._expired

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> PushClient:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __aiter__(self) -> PushClient:
        return self

    async def __anext__(self) -> message_pb2.Message:
        if self._closed:
            raise StopAsyncIteration
        self._ensure_started()
        while True:
            item = await self._messages.get()
            self._room.set()
            if isinstance(item, _Sentinel):
                # Leave the marker for any other task iterating the same client.
                self._messages.put_nowait(item)
                if self._error is not None and not self._closed:
                    raise self._error
                raise StopAsyncIteration
            self._buffered -= 1
            if item.expires_at_ms and item.expires_at_ms <= time.time() * 1000:
                # Its TTL ran out on the way or while it waited here: never hand it over. It is
                # not acked; an at-least-once copy expires from the inbox on its own.
                self._expired += 1
                log.debug("expired message_id=%s %s", item.message_id, self._fields())
                continue
            if self._auto_ack and item.message_id:
                self._record_acks((item.message_id,))
            return item

    @asynccontextmanager
    async def processing(self, message: message_pb2.Message) -> AsyncIterator[message_pb2.Message]:
        """Ack ``message`` when the block ends without an exception (needs ``auto_ack=False``).

        If the block raises, the message is not acked and its id is forgotten, so the copy the
        edge replays after the next reconnect (at-least-once) is handed over again; if the
        process dies mid-block, the next process gets it the same way."""
        if self._auto_ack:
            raise RuntimeError("processing() acks after the block; create the client with auto_ack=False")
        try:
            yield message
        except BaseException:
            self._seen.discard(message.message_id)
            raise
        await self.ack(message.message_id)

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the edge has welcomed us. Raises TimeoutError, or the PushError that
        stopped the client."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise PushError(grpc.StatusCode.CANCELLED, "client is closed")
        self._ensure_started()
        if self._connected.is_set():
            return
        connected = asyncio.ensure_future(self._connected.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
            stopped.cancel()
        # A connect that came and went while we were waking up still counts.
        if connected.done() and not connected.cancelled():
            return
        if self._error is not None:
            raise self._error
        if self._closed:
            raise PushError(grpc.StatusCode.CANCELLED, "client is closed")
        raise PushError(grpc.StatusCode.UNAVAILABLE, "connection ended and reconnect is off")

    async def subscribe(self, *topics: str, timeout: float | None = 10.0) -> edge_pb2.SubscriptionResult:
        """Subscribe this device to topics (at most 100 per call). Subscriptions belong to the
        device: the edge keeps them across reconnects, on any edge. Returns the edge's answer:
        ``applied`` topics, and ``refused`` ones each with a status ``code`` and ``message``
        (a bad name, the device's topic limit, the store down, too many changes a second).
        Waits for a connection first; raises PushError(UNAVAILABLE) if the stream ends before
        the answer (a retry is safe: subscribing is idempotent)."""
        return await self._change_topics("subscribe", topics, timeout)

    async def unsubscribe(self, *topics: str, timeout: float | None = 10.0) -> edge_pb2.SubscriptionResult:
        """The reverse of :meth:`subscribe`."""
        return await self._change_topics("unsubscribe", topics, timeout)

    async def _change_topics(
        self, kind: str, topics: Sequence[str], timeout: float | None
    ) -> edge_pb2.SubscriptionResult:
        if not topics:
            raise ValueError(f"{kind} needs at least one topic")
        if len(topics) > MAX_TOPICS_PER_FRAME:
            raise ValueError(f"{kind} takes at most {MAX_TOPICS_PER_FRAME} topics per call, got {len(topics)}")
        try:
            async with asyncio.timeout(timeout):
                return await self._send_topic_frame(kind, topics)
        except TimeoutError:
            raise PushError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no {kind} answer from the edge within {timeout:g}s"
            ) from None

    async def _send_topic_frame(self, kind: str, topics: Sequence[str]) -> edge_pb2.SubscriptionResult:
        await self.wait_connected()
        out = self._out
        if out is None:
            raise PushError(grpc.StatusCode.UNAVAILABLE, "not connected; retry")
        self._topic_requests += 1
        request_id = str(self._topic_requests)
        waiter = asyncio.get_running_loop().create_future()
        self._topic_waiters[request_id] = waiter
        body = edge_pb2.Subscribe if kind == "subscribe" else edge_pb2.Unsubscribe
        out.put_nowait(edge_pb2.ClientFrame(**{kind: body(topics=list(topics), request_id=request_id)}))
        try:
            return await waiter
        finally:
            self._topic_waiters.pop(request_id, None)

    def _fail_topic_waiters(self) -> None:
        waiters, self._topic_waiters = self._topic_waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(
                    PushError(grpc.StatusCode.UNAVAILABLE, "the stream ended before the edge answered; retry")
                )

    async def ack(self, *message_ids: str) -> None:
        """Ack messages by id. Acks are coalesced and sent within ~10 ms on the live stream,
        or after the next reconnect if there is none."""
        if self._closed:
            log.debug("ack ignored: client closed %s", self._fields())
            return
        self._record_acks(message_ids)

    async def close(self, grace: float = 1.0) -> None:
        """Stop for good. Pending acks are flushed and the stream half-closed, giving the
        edge up to ``grace`` seconds to end it cleanly; then everything is cancelled."""
        if self._closed:
            return
        self._closed = True
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            out = self._out
            if out is not None and grace > 0:
                if self._pending_acks:
                    self._kick_flush()
                out.put_nowait(_HALF_CLOSE)
                try:
                    # shield: a timeout here must not cancel the task before we do it below.
                    await asyncio.wait_for(asyncio.shield(task), grace)
                except asyncio.CancelledError:
                    task.cancel()  # our caller gave up; do not leave the loop running
                    raise
                except Exception:  # TimeoutError included: fall through and cancel
                    pass
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._connected.clear()
        self._stopped.set()
        self._messages.put_nowait(_END)
        log.info("closed %s", self._fields())

    # -- connection loop --------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"pushplat-client:{self._device_id or 'token'}"
            )

    async def _run(self) -> None:
        try:
            while not self._closing:
                try:
                    go_away_delay = await self._session()
                except PushError as err:
                    if self._closing:
                        return
                    if not err.retriable or not self._reconnect:
                        raise
                    delay = self._backoff.next_delay()
                    if err.retry_after is not None:
                        # The server knows its load better than our backoff does.
                        delay = max(delay, err.retry_after)
                    log.warning(
                        "connection lost code=%s details=%r retry_in=%.3fs %s",
                        err.code.name,
                        err.details,
                        delay,
                        self._fields(),
                    )
                else:
                    if self._closing or not self._reconnect:
                        return
                    if go_away_delay is None:
                        delay = self._backoff.next_delay()
                        log.info("stream ended by edge retry_in=%.3fs %s", delay, self._fields())
                    else:
                        # A GoAway is planned (deploy, max age), not a failure: use the
                        # edge's already-jittered delay and leave the backoff alone.
                        delay = go_away_delay
                        log.info("reconnecting after GoAway in=%.3fs %s", delay, self._fields())
                await asyncio.sleep(delay)
        except PushError as err:
            self._error = err
            level = logging.ERROR if not err.retriable else logging.WARNING
            log.log(level, "stopped code=%s details=%r %s", err.code.name, err.details, self._fields())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug in the client, not a network problem: surface it rather than spin.
            log.exception("client loop crashed %s", self._fields())
            self._error = PushError(grpc.StatusCode.UNKNOWN, f"client loop crashed: {exc!r}")
            self._error.__cause__ = exc
        finally:
            self._connected.clear()
            self._stopped.set()
            self._messages.put_nowait(_END)

    async def _session(self) -> float | None:
        """One connection. Returns the GoAway delay (s), or None if the edge ended the stream
        cleanly; raises PushError when it failed."""
        # A fresh channel (TCP connection) per attempt: behind a layer-4 load balancer a
        # reused channel would stick to the edge that just told us to go away.
        self._edge = self._edges[self._edge_index % len(self._edges)]
        self._edge_index += 1
        limit = [] if self._receive_limit_pinned else [(_RECEIVE_LIMIT_OPTION, self._receive_limit)]
        channel = self._channels.open(self._edge, limit)
        call: Any = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            call = edge_pb2_grpc.EdgeStub(channel).Connect()
            log.debug("connecting edge=%s %s", self._edge, self._fields())
            first = await self._handshake(call)
            if first is grpc.aio.EOF:
                return None
            if first.HasField("go_away"):
                # A draining edge may turn us away before welcoming us; that is still a plan.
                return self._on_go_away(first.go_away)
            interval = self._on_welcome(first.welcome)
            if self._needs_larger_limit(first.welcome.max_frame_bytes):
                return 0.0  # reconnect at once: frames this large would be refused on this channel

            out: asyncio.Queue[_WriteItem] = asyncio.Queue()
            self._out = out
            self._flush_queued = False
            if self._pending_acks:
                self._kick_flush()
            reader = asyncio.create_task(self._read_loop(call))
            writer = asyncio.create_task(self._write_loop(call, out))
            heart = asyncio.create_task(self._heartbeat_loop(out, interval))
            tasks = [reader, writer, heart]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if heart in done:
                heart.result()  # raises the liveness PushError
            if reader not in done:
                # The writer stopped because the call ended under it; the reader is about to
                # learn the real status, which says more than the failed write did.
                await asyncio.wait([reader], timeout=1.0)
            if reader.done():
                return reader.result()
            raise PushError(grpc.StatusCode.UNAVAILABLE, "stream closed while writing")
        finally:
            self._out = None
            self._connected.clear()
            self._fail_topic_waiters()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if call is not None:
                call.cancel()
            await channel.close()

    async def _handshake(self, call: Any) -> Any:
        """Send Hello; return the first ServerFrame (a Welcome or a GoAway) or EOF."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                await call.write(edge_pb2.ClientFrame(hello=self._hello))
                frame = await call.read()
        except TimeoutError:
            raise PushError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Welcome from {self._edge} within {self._connect_timeout}s",
            ) from None
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None
        except asyncio.InvalidStateError:
            # The call finished before Hello went out; its status says why.
            frame = await self._read_status(call)
        if frame is grpc.aio.EOF:
            return frame
        kind = frame.WhichOneof("frame")
        if kind not in ("welcome", "go_away"):
            raise PushError(grpc.StatusCode.INTERNAL, f"edge sent {kind or 'an empty frame'} before Welcome")
        return frame

    async def _read_status(self, call: Any) -> Any:
        try:
            return await call.read()
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None

    def _on_welcome(self, welcome: edge_pb2.Welcome) -> float:
        self._session_id = welcome.session_id
        self._edge_id = welcome.edge_id
        self._connects += 1
        self._backoff.reset()
        self._last_rx = asyncio.get_running_loop().time()
        self._connected.set()
        if self._heartbeat_interval is not None:
            interval = self._heartbeat_interval
        elif welcome.heartbeat_interval_ms > 0:
            interval = welcome.heartbeat_interval_ms / 1000.0
        else:
            interval = DEFAULT_HEARTBEAT_INTERVAL
        log.info(
            "connected edge=%s heartbeat=%.3gs connects=%d %s",
            self._edge_id,
            interval,
            self._connects,
            self._fields(),
        )
        return interval

    def _needs_larger_limit(self, max_frame_bytes: int) -> bool:
        """Whether the edge's frames can exceed this channel's receive limit; then the next
        connection gets a limit that matches (a frame over it would fail the stream, and the
        edge would resend the same frame after every reconnect)."""
        if max_frame_bytes <= self._receive_limit:
            return False
        if self._receive_limit_pinned:
            log.warning(
                "edge frames may be up to %d bytes, over the grpc.max_receive_message_length you set %s",
                max_frame_bytes,
                self._fields(),
            )
            return False
        log.info(
            "edge frames may be up to %d bytes; reconnecting with a receive limit to match %s",
            max_frame_bytes,
            self._fields(),
        )
        self._receive_limit = max_frame_bytes
        return True

    async def _read_loop(self, call: Any) -> float | None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await call.read()
            except grpc.aio.AioRpcError as err:
                raise error_from_rpc(err) from None
            if frame is grpc.aio.EOF:
                return None
            self._last_rx = loop.time()
            kind = frame.WhichOneof("frame")
            if kind == "pushes":
                await self._on_pushes(frame.pushes.messages)
                self._last_rx = loop.time()  # time spent waiting for the app is not the edge's silence
            elif kind == "pong":
                log.debug("pong %s", self._fields())
            elif kind == "subscription":
                waiter = self._topic_waiters.pop(frame.subscription.request_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame.subscription)
            elif kind == "go_away":
                return self._on_go_away(frame.go_away)
            else:
                # A newer edge may send frames we do not know; they still prove liveness.
                log.debug("ignored frame kind=%s %s", kind, self._fields())

    def _on_go_away(self, go_away: edge_pb2.GoAway) -> float:
        self._last_go_away = go_away
        log.info(
            "go_away reason=%s reconnect_after_ms=%d detail=%r %s",
            _reason_name(go_away.reason),
            go_away.reconnect_after_ms,
            go_away.detail,
            self._fields(),
        )
        return max(go_away.reconnect_after_ms, 0) / 1000.0

    async def _on_pushes(self, messages: Iterable[message_pb2.Message]) -> None:
        count = 0
        for message in messages:
            count += 1
            mid = message.message_id
            if mid and self._seen.seen(mid):
                # Already handed over. Re-ack only if the app acked the original; otherwise
                # its own (pending) ack covers this copy too.
                if mid in self._acked:
                    self._queue_acks((mid,))
                log.debug("duplicate message_id=%s %s", mid, self._fields())
                continue
            await self._buffer(message)
        log.debug("pushes count=%d %s", count, self._fields())

    async def _buffer(self, message: message_pb2.Message) -> None:
        """Queue a message for the app; while max_buffered wait, block the reader (backpressure:
        unread frames stay in gRPC's flow-control window, and the edge stops sending)."""
        while self._buffered >= self._max_buffered:
            self._room.clear()
            if not self._waiting_for_app:
                self._waiting_for_app = True
                log.debug("buffer full max_buffered=%d, reading paused %s", self._max_buffered, self._fields())
            await self._room.wait()
        self._waiting_for_app = False
        self._buffered += 1
        self._messages.put_nowait(message)

    async def _write_loop(self, call: Any, out: asyncio.Queue[_WriteItem]) -> None:
        """The only writer on the call: grpc.aio allows one pending write at a time."""
        try:
            while True:
                item = await out.get()
                if item is _FLUSH_ACKS:
                    await self._flush_acks(call)
                elif item is _HALF_CLOSE:
                    await call.done_writing()
                    log.debug("half-closed %s", self._fields())
                elif isinstance(item, edge_pb2.ClientFrame):
                    await call.write(item)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as err:
            # The call is over; the reader reports why. Stopping is all we need to do.
            log.debug("write failed %r %s", err, self._fields())

    async def _flush_acks(self, call: Any) -> None:
        if not self._closing and len(self._pending_acks) < MAX_ACK_IDS:
            # Linger for company, but no longer than it takes MAX_ACK_IDS acks to gather.
            self._acks_full = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(ACK_LINGER):
                    await self._acks_full
            except TimeoutError:
                pass
            finally:
                self._acks_full = None
        self._flush_queued = False
        ids = list(self._pending_acks)
        self._pending_acks.clear()
        if not ids:
            return
        sent = 0
        try:
            # The edge takes at most MAX_ACK_IDS ids per frame (and ends a stream that sends more).
            for sent in range(0, len(ids), MAX_ACK_IDS):
                await call.write(edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=ids[sent : sent + MAX_ACK_IDS])))
        except BaseException:
            # Not known to be delivered: keep them for the next stream (acks are idempotent).
            restored = dict.fromkeys(ids[sent:])
            restored.update(self._pending_acks)
            self._pending_acks = restored
            raise
        log.debug("acked count=%d %s", len(ids), self._fields())

    async def _heartbeat_loop(self, out: asyncio.Queue[_WriteItem], interval: float) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + interval
        while True:
            now = loop.time()
            if self._waiting_for_app:
                # We stopped reading, so the edge's frames cannot reach us: not its silence.
                self._last_rx = now
            deadline = self._last_rx + MISSED_HEARTBEATS * interval
            if now >= deadline:
                raise PushError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no frame from the edge for {MISSED_HEARTBEATS * interval:.3g}s",
                )
            if now >= next_ping:
                out.put_nowait(_PING)
                next_ping += interval
                if next_ping <= now:  # the loop stalled; do not fire a burst to catch up
                    next_ping = now + interval
            await asyncio.sleep(max(0.0, min(next_ping, deadline) - now))

    # -- acks -------------------------------------------------------------------------

    def _record_acks(self, message_ids: Iterable[str]) -> None:
        ids = [mid for mid in message_ids if mid]
        for mid in ids:
            self._acked.add(mid)
        self._queue_acks(ids)

    def _queue_acks(self, message_ids: Iterable[str]) -> None:
        added = False
        for mid in message_ids:
            self._pending_acks[mid] = None
            added = True
        if added:
            self._kick_flush()
            full = self._acks_full
            if full is not None and not full.done() and len(self._pending_acks) >= MAX_ACK_IDS:
                full.set_result(None)

    def _kick_flush(self) -> None:
        # One flush marker in the queue at a time; it collects every id added before it runs.
        if self._out is not None and not self._flush_queued:
            self._flush_queued = True
            self._out.put_nowait(_FLUSH_ACKS)

    # -- logging ----------------------------------------------------------------------

    def _fields(self) -> str:
        return f"device={self._device_id or '-'} session={self._session_id or '-'}"

    def __repr__(self) -> str:
        return (
            f"PushClient(edge={self._edge!r}, device={self._device_id!r}, "
            f"session={self._session_id!r}, connected={self.connected})"
        )


def _reason_name(reason: int) -> str:
    try:
        return edge_pb2.GoAway.Reason.Name(reason)
    except ValueError:  # a reason added after this SDK was built
        return str(reason)
