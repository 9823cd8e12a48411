"""SendStream: many sends over one ``Push.SendStream`` call, for high-volume backends.

Each request carries a request_id of the SDK's choosing and is answered by one response with
that id, in any order. At most ``window`` requests are unanswered at once: ``send()`` waits for
a free slot first, so a fast producer cannot queue without bound (the server has its own window
and stops reading when it is full). A refused request fails only its own ``send()``; the stream
carries on. If the stream itself ends (the api went away, a bad key), every unanswered send
fails with that status and the stream is closed: open a new one.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc

from .errors import AuthError, PushError, error_from_rpc
from .request import make_request
from .retry import retry_rate_limited
from .v1 import push_pb2, push_pb2_grpc

__all__ = ["SendStream"]


def _error_of(error: push_pb2.SendError) -> PushError:
    try:
        code = next(c for c in grpc.StatusCode if c.value[0] == error.code)
    except StopIteration:
        code = grpc.StatusCode.UNKNOWN
    retry_after = error.retry_after_ms / 1000.0 if error.retry_after_ms else None
    cls = AuthError if code == grpc.StatusCode.UNAUTHENTICATED else PushError
    return cls(code, error.message, retry_after=retry_after)


class SendStream:
    """Open with :meth:`PushSender.stream`::

    async with sender.stream(window=256) as stream:
        replies = await asyncio.gather(*(stream.send(device_id=d, payload=b"hi") for d in devices))
    """

    def __init__(
        self,
        stub: push_pb2_grpc.PushStub,
        metadata: tuple[tuple[str, str], ...],
        *,
        window: int,
        rate_limit_retries: int,
        max_retry_wait: float,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self._stub = stub
        self._metadata = metadata
        self._rate_limit_retries = rate_limit_retries
        self._max_retry_wait = max_retry_wait
        self._slots = asyncio.Semaphore(window)
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[push_pb2.SendResponse]] = {}
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._failure: PushError | None = None
        self._closed = False

    @property
    def unanswered(self) -> int:
        """Requests written and not answered yet (at most ``window``)."""
        return len(self._waiting)

    async def __aenter__(self) -> SendStream:
        await self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _open(self) -> None:
        async with self._open_lock:
            if self._call is not None:
                return
            self._call = self._stub.SendStream(metadata=self._metadata)
            self._reader = asyncio.create_task(self._read(), name="pushplat-send-stream")
            # Write nothing before the api has accepted the stream (its headers) or refused it:
            # a write racing a refusal turns the status into INTERNAL and hides the real one.
            try:
                await self._call.initial_metadata()
            except grpc.aio.AioRpcError as err:
                self._fail(error_from_rpc(err))
            if self._call.done():
                await asyncio.gather(self._reader, return_exceptions=True)

    async def send(self, *, timeout: float | None = None, **message: Any) -> push_pb2.SendResponse:
        """Send one message (the keyword arguments of :meth:`PushSender.send`, or ``request=`` a
        SendRequest). Waits for a window slot, then for the answer. A rate-limited request is
        retried after the server's hint, as PushSender.send does."""
        request = message.pop("request", None) or make_request(**message)

        async def once(remaining: float | None) -> push_pb2.SendResponse:
            try:
                return await asyncio.wait_for(self._send_once(request), remaining)
            except TimeoutError:
                raise PushError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout}s") from None

        return await retry_rate_limited(
            once, retries=self._rate_limit_retries, max_wait=self._max_retry_wait, timeout=timeout
        )

    async def _send_once(self, request: push_pb2.SendRequest) -> push_pb2.SendResponse:
        await self._slots.acquire()
        request_id = str(next(self._ids))
        answer: asyncio.Future[push_pb2.SendResponse] = asyncio.get_running_loop().create_future()
        try:
            if self._closed:
                raise PushError(grpc.StatusCode.CANCELLED, "the stream is closed")
            await self._open()
            if self._failure is not None:
                raise self._failure
            item = push_pb2.SendRequest()
            item.CopyFrom(request)
            item.request_id = request_id
            self._waiting[request_id] = answer
            async with self._write_lock:  # grpc.aio allows one write at a time
                if self._failure is not None:
                    raise self._failure
                try:
                    await self._call.write(item)
                except grpc.aio.AioRpcError as err:
                    # The stream has ended. Write nothing more: a write after the end turns
                    # the call's status into INTERNAL, hiding the real one (this one).
                    self._fail(error_from_rpc(err))
                except asyncio.InvalidStateError:
                    self._fail(PushError(grpc.StatusCode.CANCELLED, "the stream is closed"))
            return await answer
        finally:
            self._waiting.pop(request_id, None)
            self._slots.release()

    async def _read(self) -> None:
        try:
            async for response in self._call:
                answer = self._waiting.get(response.request_id)
                if answer is None or answer.done():
                    continue  # not ours (or already failed): nothing waits for it
                if response.HasField("error") and response.error.code:
                    answer.set_exception(_error_of(response.error))
                else:
                    answer.set_result(response)
            failure = PushError(grpc.StatusCode.UNAVAILABLE, "SendStream ended before every request was answered")
        except grpc.aio.AioRpcError as err:
            failure = error_from_rpc(err)
        except asyncio.CancelledError:
            failure = PushError(grpc.StatusCode.CANCELLED, "the stream is closed")
        self._fail(failure)

    def _fail(self, failure: PushError) -> None:
        """The stream is over: every unanswered send fails with the first status seen."""
        if self._failure is None:
            self._failure = failure
        for answer in list(self._waiting.values()):
            if not answer.done():
                answer.set_exception(self._failure)

    async def close(self, timeout: float | None = 30.0) -> None:
        """Wait (at most `timeout` seconds) for the answers still due, then end the stream.
        Sends still unanswered then fail with PushError(DEADLINE_EXCEEDED): they may or may not
        have been accepted (GetStatus, or a retry with the same idempotency key, tells)."""
        if self._closed:
            return
        self._closed = True
        if self._call is None:
            return
        pending = [a for a in self._waiting.values() if not a.done()]
        late: set[asyncio.Future[push_pb2.SendResponse]] = set()
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for answer in late:
                answer.set_exception(
                    PushError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout}s of close()")
                )
        if late:
            self._call.cancel()  # an api that does not answer would not end the stream either
        else:
            async with self._write_lock:
                try:
                    await self._call.done_writing()
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    pass
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def __repr__(self) -> str:
        return f"SendStream(window={self.window}, unanswered={self.unanswered})"
