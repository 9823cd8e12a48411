"""PushSender: the backend side, ``Push.Send`` / ``Push.SendBatch`` / ``Push.SendStream``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from .errors import error_from_rpc
from .request import make_request
from .retry import retry_rate_limited
from .stream import SendStream
from .tls import TLS, ChannelFactory
from .v1 import push_pb2, push_pb2_grpc

__all__ = ["PushSender", "make_request"]


def _subscribe_request(
    topics: Sequence[str], device_ids: Sequence[str], user_ids: Sequence[str]
) -> push_pb2.SubscribeRequest:
    if isinstance(topics, str) or isinstance(device_ids, str) or isinstance(user_ids, str):
        raise TypeError("topics, device_ids and user_ids are sequences of strings, not one string")
    return push_pb2.SubscribeRequest(topics=list(topics), device_ids=list(device_ids), user_ids=list(user_ids))


class PushSender:
    """Sends messages through the api's ``Push`` service.

    ::

        async with PushSender("127.0.0.1:50052", api_key=key) as sender:
            resp = await sender.send(user_id="u1", payload=b"hi", priority="high")
            print(resp.message_id)

    A send returns once the message is enqueued (fire-and-forget). gRPC failures raise
    :class:`PushError` (:class:`AuthError` for a bad key). The one failure the sender retries
    on its own is the api's rate limit (RESOURCE_EXHAUSTED with a ``retry-after-ms`` hint):
    nothing was enqueued, so a retry is always safe. It waits for the hint (plus up to 10 %
    jitter) at most ``rate_limit_retries`` times, and only while the wait is at most
    ``max_retry_wait`` seconds and fits in the call's timeout; otherwise the PushError is
    raised with ``retry_after`` set, for the caller to decide. Anything else is not retried,
    since only the caller knows whether a retry is safe (use ``idempotency_key`` to make it so).
    """

    def __init__(
        self,
        api: str,
        api_key: str | None = None,
        *,
        tls: TLS | bool | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        rate_limit_retries: int = 3,
        max_retry_wait: float = 5.0,
    ) -> None:
        if not api:
            raise ValueError("PushSender needs the api address, e.g. '127.0.0.1:50052'")
        if rate_limit_retries < 0:
            raise ValueError("rate_limit_retries must be 0 or more")
        self._api = api
        self._rate_limit_retries = rate_limit_retries
        self._max_retry_wait = max_retry_wait
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
        topic: str | None = None,
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
        """Send one message to a user (all their devices), one device, or a topic (every device
        subscribed to it and connected when it reaches their edge: at-most-once)."""
        request = make_request(
            user_id=user_id,
            device_id=device_id,
            topic=topic,
            payload=payload,
            content_type=content_type,
            priority=priority,
            ttl_seconds=ttl_seconds,
            collapse_key=collapse_key,
            idempotency_key=idempotency_key,
            at_least_once=at_least_once,
            labels=labels,
        )
        return await self._unary("Send", request, timeout)

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
        response = await self._unary("SendBatch", batch, timeout)
        return list(response.responses)

    def stream(self, *, window: int = 256) -> SendStream:
        """A :class:`SendStream`: many sends over one ``Push.SendStream`` call, with at most
        ``window`` unanswered at once. Use it as ``async with sender.stream() as stream:``."""
        return SendStream(
            self._get_stub(),
            self._metadata,
            window=window,
            rate_limit_retries=self._rate_limit_retries,
            max_retry_wait=self._max_retry_wait,
        )

    async def get_status(self, message_id: str, *, timeout: float | None = 10.0) -> push_pb2.GetStatusResponse:
        """The last known delivery state of a message, overall and per target device."""
        return await self._unary("GetStatus", push_pb2.GetStatusRequest(message_id=message_id), timeout)

    async def get_presence(self, user_id: str, *, timeout: float | None = 10.0) -> push_pb2.GetPresenceResponse:
        """A user's connected devices and the edge each one is on."""
        return await self._unary("GetPresence", push_pb2.GetPresenceRequest(user_id=user_id), timeout)

    async def subscribe(
        self,
        topics: Sequence[str],
        *,
        device_ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
        timeout: float | None = 10.0,
    ) -> push_pb2.SubscribeResponse:
        """Subscribe devices (by id, or every known device of each user) to topics: at most 100
        topics and 1,000 devices per call. Per device, what was applied and what was refused."""
        return await self._unary("Subscribe", _subscribe_request(topics, device_ids, user_ids), timeout)

    async def unsubscribe(
        self,
        topics: Sequence[str],
        *,
        device_ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
        timeout: float | None = 10.0,
    ) -> push_pb2.SubscribeResponse:
        """The reverse of :meth:`subscribe`."""
        return await self._unary("Unsubscribe", _subscribe_request(topics, device_ids, user_ids), timeout)

    async def get_subscriptions(
        self, device_id: str, *, timeout: float | None = 10.0
    ) -> push_pb2.GetSubscriptionsResponse:
        """The topics one device is subscribed to (sorted)."""
        return await self._unary("GetSubscriptions", push_pb2.GetSubscriptionsRequest(device_id=device_id), timeout)

    async def _unary(self, method: str, request: Any, timeout: float | None) -> Any:
        async def once(remaining: float | None) -> Any:
            try:
                return await getattr(self._get_stub(), method)(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as err:
                raise error_from_rpc(err) from None

        return await retry_rate_limited(
            once, retries=self._rate_limit_retries, max_wait=self._max_retry_wait, timeout=timeout
        )

    def __repr__(self) -> str:
        tls = self._channels.tls
        return f"PushSender(api={self._api!r}, api_key={'set' if self._metadata else 'none'}, tls={tls!r})"
