"""PushSender: the backend side, ``Push.Send`` / ``Push.SendBatch``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from .errors import error_from_rpc
from .priority import parse_priority
from .tls import TLS, ChannelFactory
from .v1 import message_pb2, push_pb2, push_pb2_grpc

__all__ = ["PushSender", "make_request"]


def make_request(
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    payload: bytes | str = b"",
    content_type: str = "",
    priority: str | int = "normal",
    ttl_seconds: int = 0,
    collapse_key: str = "",
    idempotency_key: str = "",
    at_least_once: bool = False,
    labels: Mapping[str, str] | None = None,
) -> push_pb2.SendRequest:
    """Build a SendRequest from keyword arguments, checking what the server would reject."""
    # The target is a oneof: setting both would silently keep only the last one.
    if bool(user_id) == bool(device_id):
        raise ValueError("give exactly one of user_id or device_id")
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    elif not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
    request = push_pb2.SendRequest(
        payload=bytes(payload),
        content_type=content_type,
        priority=parse_priority(priority),
        ttl_seconds=ttl_seconds,
        collapse_key=collapse_key,
        idempotency_key=idempotency_key,
        delivery=message_pb2.AT_LEAST_ONCE if at_least_once else message_pb2.AT_MOST_ONCE,
        labels=dict(labels or {}),
    )
    if user_id:
        request.user_id = user_id
    else:
        request.device_id = device_id or ""
    return request


class PushSender:
    """Sends messages through the api's ``Push`` service.

    ::

        async with PushSender("127.0.0.1:50052", api_key=key) as sender:
            resp = await sender.send(user_id="u1", payload=b"hi", priority="high")
            print(resp.message_id)

    A send returns once the message is enqueued (fire-and-forget). gRPC failures raise
    :class:`PushError` (:class:`AuthError` for a bad key); the sender does not retry, since
    only the caller knows whether a retry is safe (use ``idempotency_key`` to make it so).
    """

    def __init__(
        self,
        api: str,
        api_key: str | None = None,
        *,
        tls: TLS | bool | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not api:
            raise ValueError("PushSender needs the api address, e.g. '127.0.0.1:50052'")
        self._api = api
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        # tls=True: TLS against the default roots; TLS(...) for a CA file or a client certificate.
        self._channels = ChannelFactory(tls, list(channel_options))
        self._channel: grpc.aio.Channel | None = None
        self._stub: push_pb2_grpc.PushStub | None = None

    async def __aenter__(self) -> PushSender:
        self._get_stub()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    def _get_stub(self) -> push_pb2_grpc.PushStub:
        # Created lazily: a grpc.aio channel belongs to the event loop that is running.
        if self._stub is None:
            self._channel = self._channels.open(self._api)
            self._stub = push_pb2_grpc.PushStub(self._channel)
        return self._stub

    async def send(
        self,
        *,
        user_id: str | None = None,
        device_id: str | None = None,
        payload: bytes | str,
        content_type: str = "",
        priority: str | int = "normal",
        ttl_seconds: int = 0,
        collapse_key: str = "",
        idempotency_key: str = "",
        at_least_once: bool = False,
        labels: Mapping[str, str] | None = None,
        # A gRPC deadline, not a local timer: the server sees it and stops work past it.
        timeout: float | None = 10.0,
    ) -> push_pb2.SendResponse:
        """Send one message to a user (all their devices) or one device."""
        request = make_request(
            user_id=user_id,
            device_id=device_id,
            payload=payload,
            content_type=content_type,
            priority=priority,
            ttl_seconds=ttl_seconds,
            collapse_key=collapse_key,
            idempotency_key=idempotency_key,
            at_least_once=at_least_once,
            labels=labels,
        )
        try:
            return await self._get_stub().Send(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None

    async def send_batch(
        self,
        requests: Iterable[Mapping[str, Any] | push_pb2.SendRequest],
        *,
        timeout: float | None = 10.0,  # a gRPC deadline, sent to the server
    ) -> list[push_pb2.SendResponse]:
        """Send many messages in one call; all are enqueued or the call fails. Each item is a
        SendRequest or a dict of :meth:`send`'s keyword arguments. Responses are in order."""
        batch = push_pb2.SendBatchRequest(
            requests=[r if isinstance(r, push_pb2.SendRequest) else make_request(**r) for r in requests]
        )
        try:
            response = await self._get_stub().SendBatch(batch, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None
        return list(response.responses)

    async def get_status(self, message_id: str, *, timeout: float | None = 10.0) -> push_pb2.GetStatusResponse:
        """The last known delivery state of a message, overall and per target device."""
        return await self._unary("GetStatus", push_pb2.GetStatusRequest(message_id=message_id), timeout)

    async def get_presence(self, user_id: str, *, timeout: float | None = 10.0) -> push_pb2.GetPresenceResponse:
        """A user's connected devices and the edge each one is on."""
        return await self._unary("GetPresence", push_pb2.GetPresenceRequest(user_id=user_id), timeout)

    async def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return await getattr(self._get_stub(), method)(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None

    def __repr__(self) -> str:
        tls = self._channels.tls
        return f"PushSender(api={self._api!r}, api_key={'set' if self._metadata else 'none'}, tls={tls!r})"
