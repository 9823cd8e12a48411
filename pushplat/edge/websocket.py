"""The edge's WebSocket transport: browsers are devices too.

Each binary WebSocket message carries one serialized ClientFrame or ServerFrame, under the
subprotocol `pushplat.v1`. A connection runs the very same `Edge.Connect` lifecycle as a gRPC
stream (Hello and auth, pending-Hello limit, admission, Welcome, heartbeats, max age, GoAway,
drain, replacement, registry, inbox replay, ack checks, metrics): `WsStream` and `WsContext`
give EdgeServicer.Connect the request iterator and the servicer context it reads and writes.
A gRPC status ends the connection with close code 4000 + the status code, the message in the
close reason (prefixed `retry-after-ms=N ` when the status carries that hint). The HTTP side
serves the demo page and the browser SDK bundle (pushplat.web); everything else is 404.
"""

from __future__ import annotations

import asyncio
import http
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from pushplat_client.v1 import edge_pb2
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from pushplat import web
from pushplat.config import Config
from pushplat.edge.origins import OriginCheck
from pushplat.edge.servicer import EdgeServicer
from pushplat.limits import MAX_ACK_IDS, MAX_ID_BYTES
from pushplat.logs import LogLimiter, kv
from pushplat.metrics import LIMITS_HIT, WS_HANDSHAKES

log = logging.getLogger("pushplat.edge.ws")
# The library logs every connection at INFO; clients choose how often that is. Ours are kv lines.
LIBRARY_LOG = logging.getLogger("pushplat.edge.ws.library")
LIBRARY_LOG.setLevel(logging.WARNING)

SUBPROTOCOL = "pushplat.v1"
CONNECT_PATH = "/connect"
STATUS_CLOSE_BASE = 4000
RETRY_AFTER_PREFIX = "retry-after-ms="
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code
# Incoming messages buffered per connection before reading pauses (so at most this many times
# --ws-max-message-bytes); the reader takes them as they come, acks are small.
MAX_QUEUE = 4
# The smallest --ws-max-message-bytes: an Ack of MAX_ACK_IDS ids of MAX_ID_BYTES, with framing.
MIN_MESSAGE_BYTES = MAX_ACK_IDS * (MAX_ID_BYTES + 3) + 64


class StreamAborted(Exception):
    """What `context.abort` raises: the status that ends the connection."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_after_ms: str | None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.retry_after_ms = retry_after_ms


class WsContext:
    """The part of grpc.aio.ServicerContext that EdgeServicer.Connect uses, over a WebSocket."""

    transport = "websocket"

    def __init__(self, connection: ServerConnection, scheme: str) -> None:
        self.connection = connection
        host, port = connection.remote_address[:2]
        self._peer = f"{scheme}:{host}:{port}"

    def peer(self) -> str:
        return self._peer

    async def write(self, frame: edge_pb2.ServerFrame) -> None:
        await self.connection.send(frame.SerializeToString())

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        retry = next((value for key, value in trailing_metadata if key == "retry-after-ms"), None)
        raise StreamAborted(code, details, retry)


class WsStream:
    """The ClientFrames of one connection, as the request iterator of a gRPC stream."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection

    def __aiter__(self) -> WsStream:
        return self

    async def __anext__(self) -> edge_pb2.ClientFrame:
        try:
            data = await self.connection.recv()
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                LIMITS_HIT.labels("ws_message_bytes").inc()
            raise StopAsyncIteration from None
        if isinstance(data, str):
            # The servicer answers a DecodeError with INVALID_ARGUMENT, as for a malformed frame.
            raise DecodeError(f"a text message; {SUBPROTOCOL} carries each ClientFrame in a binary message")
        return edge_pb2.ClientFrame.FromString(data)


def close_reason(exc: StreamAborted) -> str:
    """The close reason for a status: its message (with the retry hint first), cut to 123 bytes."""
    text = f"{RETRY_AFTER_PREFIX}{exc.retry_after_ms} {exc.details}" if exc.retry_after_ms else exc.details
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class WebSocketEdge:
    """Serves `ws://HOST:PORT/connect` (wss:// with --tls-cert/--tls-key) beside the gRPC port."""

    def __init__(self, config: Config, servicer: EdgeServicer) -> None:
        self.config = config
        self.servicer = servicer
        self.origins = OriginCheck(config.ws_allowed_origins)
        self._server: Server | None = None
        self._scheme = "ws"
        self._refusal_log = LogLimiter(interval_seconds=0.1)

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        """Listen; returns the bound port. Raises OSError if it is taken."""
        self._scheme = "wss" if tls is not None else "ws"
        config = self.config
        self._server = await serve(
            self._handle,
            host,
            port,
            ssl=tls,
            process_request=self._process_request,
            subprotocols=[SUBPROTOCOL],
            # Small binary frames: permessage-deflate would cost more memory per connection than it saves.
            compression=None,
            server_header=None,
            open_timeout=config.handshake_timeout_seconds,
            # As gRPC keepalive does: find half-open TCP connections the heartbeat cannot see.
            ping_interval=config.keepalive_seconds,
            ping_timeout=config.keepalive_timeout_seconds,
            close_timeout=config.goaway_grace_seconds,
            max_size=config.ws_max_message_bytes,
            max_queue=MAX_QUEUE,
            logger=LIBRARY_LOG,
        )
        if not web.bundle_built():
            log.warning(
                kv(
                    "web.bundle_missing",
                    path=str(web.BUNDLE),
                    detail=f"the demo page needs the browser SDK bundle; build it with {web.BUILD_HINT}",
                )
            )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Plain HTTP gets the demo page; an upgrade must be for /connect, from an allowed
        Origin, and offer the pushplat.v1 subprotocol."""
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self._page(connection, path)
        if path != CONNECT_PATH:
            WS_HANDSHAKES.labels("not_found").inc()
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"WebSocket devices connect to {CONNECT_PATH}\n")
        origin = request.headers.get("Origin")
        if not self.origins.allows(origin):
            WS_HANDSHAKES.labels("origin").inc()
            self._log_refused(connection, "origin", f"origin {origin!r} is not in --ws-allowed-origins")
            return connection.respond(
                http.HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed (--ws-allowed-origins)\n"
            )
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]
        if SUBPROTOCOL not in offered:
            WS_HANDSHAKES.labels("subprotocol").inc()
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST, f"offer the WebSocket subprotocol {SUBPROTOCOL} (Sec-WebSocket-Protocol)\n"
            )
        WS_HANDSHAKES.labels("ok").inc()
        return None

    async def _page(self, connection: ServerConnection, path: str) -> Response:
        found = await asyncio.to_thread(web.asset, path)
        if found is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        headers = Headers(
            [
                ("Content-Type", found.content_type),
                ("Content-Length", str(len(found.body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        return Response(found.status, http.HTTPStatus(found.status).phrase, headers, found.body)

    async def _handle(self, connection: ServerConnection) -> None:
        context = WsContext(connection, self._scheme)
        stream = WsStream(connection)
        code, reason = CloseCode.NORMAL_CLOSURE, ""
        try:
            await self.servicer.Connect(stream, context)  # type: ignore[arg-type]
        except StreamAborted as exc:
            code, reason = STATUS_CLOSE_BASE + exc.code.value[0], close_reason(exc)
        except ConnectionClosed:
            return
        await connection.close(code, reason)

    def _log_refused(self, connection: ServerConnection, result: str, reason: str) -> None:
        # Any page can make a browser try: at most 10 lines a second per kind.
        allowed, suppressed = self._refusal_log.allow(result)
        if allowed:
            host, port = connection.remote_address[:2]
            log.info(
                kv(
                    "ws.refused",
                    peer=f"{host}:{port}",
                    result=result,
                    reason=reason,
                    suppressed=suppressed or None,
                )
            )


def ws_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


__all__: list[Any] = ["MIN_MESSAGE_BYTES", "SUBPROTOCOL", "WebSocketEdge", "ws_tls_context"]
