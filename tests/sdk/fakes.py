"""A scriptable in-process Edge (and Push) server for the SDK tests.

Each client connection becomes an :class:`EdgeConn` that the test drives by hand: send a
Welcome, pushes or a GoAway, read what the client wrote, end or abort the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, message_pb2, push_pb2, push_pb2_grpc

WAIT = 1.5  # upper bound for any single expected event; tests normally take milliseconds


def msg(message_id: str, payload: bytes = b"x", **fields: Any) -> message_pb2.Message:
    return message_pb2.Message(message_id=message_id, payload=payload, **fields)


class EdgeConn:
    """The server's view of one Connect stream."""

    def __init__(self, context: grpc.aio.ServicerContext, hello: edge_pb2.Hello, index: int, at: float) -> None:
        self.context = context
        self.hello = hello
        self.index = index
        self.hello_at = at  # loop time the Hello arrived
        self.frames: dict[str, asyncio.Queue[edge_pb2.ClientFrame]] = {
            kind: asyncio.Queue() for kind in ("ack", "ping", "hello")
        }
        self.acked: list[str] = []
        self.pings = 0
        self.auto_pong = True
        self.client_half_closed = asyncio.Event()
        self._write_lock = asyncio.Lock()  # auto-pongs and the test may write at once
        self.gone = asyncio.Event()  # the stream is over, for whatever reason
        self.finish: asyncio.Future[tuple[grpc.StatusCode, str, Sequence[tuple[str, str]]] | None] = (
            asyncio.get_running_loop().create_future()
        )

    async def send(self, frame: edge_pb2.ServerFrame) -> None:
        async with self._write_lock:
            await self.context.write(frame)

    async def welcome(
        self, *, session_id: str | None = None, edge_id: str = "edge-test", heartbeat_ms: int = 0
    ) -> None:
        await self.send(
            edge_pb2.ServerFrame(
                welcome=edge_pb2.Welcome(
                    session_id=session_id or f"s{self.index}", edge_id=edge_id, heartbeat_interval_ms=heartbeat_ms
                )
            )
        )

    async def push(self, *messages: message_pb2.Message) -> None:
        await self.send(edge_pb2.ServerFrame(pushes=edge_pb2.PushBatch(messages=messages)))

    async def go_away(self, reconnect_after_ms: int, reason: int = edge_pb2.GoAway.MAX_AGE) -> None:
        await self.send(
            edge_pb2.ServerFrame(
                go_away=edge_pb2.GoAway(reason=reason, reconnect_after_ms=reconnect_after_ms, detail="test")
            )
        )

    async def next_frame(self, kind: str, timeout: float = WAIT) -> edge_pb2.ClientFrame:
        return await asyncio.wait_for(self.frames[kind].get(), timeout)

    async def acks_until(self, ids: set[str], timeout: float = WAIT) -> list[edge_pb2.ClientFrame]:
        """Collect Ack frames until every id in ``ids`` has been acked; returns the frames."""
        frames: list[edge_pb2.ClientFrame] = []

        async def collect() -> None:
            while not ids <= set(self.acked):
                frames.append(await self.frames["ack"].get())

        await asyncio.wait_for(collect(), timeout)
        return frames

    def end(self) -> None:
        """End the stream with OK."""
        if not self.finish.done():
            self.finish.set_result(None)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing: Sequence[tuple[str, str]] = ()) -> None:
        if not self.finish.done():
            self.finish.set_result((code, details, trailing))

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self.context.read()
                if frame is grpc.aio.EOF:
                    self.client_half_closed.set()
                    return
                kind = frame.WhichOneof("frame")
                if kind == "ack":
                    self.acked.extend(frame.ack.message_ids)
                elif kind == "ping":
                    self.pings += 1
                    if self.auto_pong:
                        await self.send(edge_pb2.ServerFrame(pong=edge_pb2.Pong()))
                self.frames[kind or "hello"].put_nowait(frame)
        except Exception:
            # The client went away (cancelled the call); the handler notices via `gone`.
            self.gone.set()


class FakeEdge(edge_pb2_grpc.EdgeServicer):
    def __init__(self) -> None:
        self.address = ""
        self.conns: asyncio.Queue[EdgeConn] = asyncio.Queue()
        self.all: list[EdgeConn] = []
        self.end_on_half_close = True

    async def next_conn(self, timeout: float = WAIT) -> EdgeConn:
        return await asyncio.wait_for(self.conns.get(), timeout)

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        loop = asyncio.get_running_loop()
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        conn = EdgeConn(context, first.hello, len(self.all), loop.time())
        self.all.append(conn)
        self.conns.put_nowait(conn)
        reader = asyncio.create_task(conn._read_loop())
        try:
            # Also wake if the client disappears or (like a real edge) when it half-closes.
            waits = [asyncio.create_task(conn.gone.wait())]
            if self.end_on_half_close:
                waits.append(asyncio.create_task(conn.client_half_closed.wait()))
            await asyncio.wait([conn.finish, *waits], return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
            outcome = conn.finish.result() if conn.finish.done() else None
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            conn.gone.set()
        if outcome is not None:
            code, details, trailing = outcome
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            await context.abort(code, details)


class FakePush(push_pb2_grpc.PushServicer):
    """Records requests and metadata; answers with ids, or aborts as told."""

    def __init__(self) -> None:
        self.address = ""
        self.requests: list[push_pb2.SendRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.fail: tuple[grpc.StatusCode, str, Sequence[tuple[str, str]]] | None = None
        # SendStream answers only while this is set (clear it to hold answers back).
        self.answering = asyncio.Event()
        self.answering.set()
        # SendStream answers each pair of requests in reverse order (answers may come in any
        # order); message ids then name the device, so a mismatched answer shows.
        self.reverse_pairs = False
        self.rate_limited_once: set[bytes] = set()

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        self.metadata.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        if self.fail is not None:
            code, details, trailing = self.fail
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            await context.abort(code, details)

    async def Send(self, request: push_pb2.SendRequest, context: grpc.aio.ServicerContext) -> push_pb2.SendResponse:
        await self._check(context)
        self.requests.append(request)
        return push_pb2.SendResponse(message_id=f"m{len(self.requests)}", duplicate=False)

    async def SendBatch(
        self, request: push_pb2.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SendBatchResponse:
        await self._check(context)
        responses = []
        for item in request.requests:
            self.requests.append(item)
            responses.append(push_pb2.SendResponse(message_id=f"m{len(self.requests)}"))
        return push_pb2.SendBatchResponse(responses=responses)

    async def SendStream(
        self, requests: AsyncIterator[push_pb2.SendRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[push_pb2.SendResponse]:
        """Reads everything it is sent; answers in order while `answering` is set. Payload
        b"refuse" gets an INVALID_ARGUMENT item error, b"slow-down" one RESOURCE_EXHAUSTED first."""
        await self._check(context)
        await context.send_initial_metadata(())  # as the api does: the stream is accepted
        queue: asyncio.Queue[push_pb2.SendRequest | None] = asyncio.Queue()

        async def read() -> None:
            async for item in requests:
                self.requests.append(item)
                queue.put_nowait(item)
            queue.put_nowait(None)

        reader = asyncio.create_task(read())
        held: list[push_pb2.SendRequest] = []
        try:
            while (item := await queue.get()) is not None:
                await self.answering.wait()
                if self.reverse_pairs:
                    held.append(item)
                    if len(held) == 2:
                        for request in reversed(held):
                            message_id = f"m-{request.device_id}"
                            yield push_pb2.SendResponse(message_id=message_id, request_id=request.request_id)
                        held.clear()
                    continue
                if item.payload == b"refuse":
                    error = push_pb2.SendError(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="refused")
                    yield push_pb2.SendResponse(request_id=item.request_id, error=error)
                elif item.payload == b"slow-down" and item.payload not in self.rate_limited_once:
                    self.rate_limited_once.add(item.payload)
                    error = push_pb2.SendError(
                        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="over the rate", retry_after_ms=20
                    )
                    yield push_pb2.SendResponse(request_id=item.request_id, error=error)
                else:
                    yield push_pb2.SendResponse(message_id=f"m{len(self.requests)}", request_id=item.request_id)
        finally:
            reader.cancel()

    async def GetStatus(
        self, request: push_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetStatusResponse:
        await self._check(context)
        return push_pb2.GetStatusResponse(
            message_id=request.message_id,
            state=push_pb2.DELIVERY_STATE_ACKED,
            devices=[push_pb2.DeviceStatus(device_id="d1", state=push_pb2.DELIVERY_STATE_ACKED)],
        )

    async def GetPresence(
        self, request: push_pb2.GetPresenceRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.GetPresenceResponse:
        await self._check(context)
        return push_pb2.GetPresenceResponse(
            user_id=request.user_id, devices=[push_pb2.PresenceDevice(device_id="d1", edge_id="e1", session_id="s1")]
        )
