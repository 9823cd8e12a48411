"""The edge's WebSocket transport: browsers are devices too.

Each binary WebSocket message carries one serialized ClientFrame or ServerFrame, under the
subprotocol `pushplat.v1`. A connection is a DeviceStream (edge/stream.py) served by the same
SessionLifecycle as a gRPC stream (Hello and auth, pending-Hello limit, admission, Welcome,
heartbeats, max age, GoAway, drain, replacement, registry, inbox replay, ack checks, metrics
with transport="websocket"). A refusal ends the connection with close code 4000 + the gRPC
status code, the message in the close reason (prefixed `retry-after-ms=N ` when it carries that
hint); a session dropped on a stuck write aborts the socket. Byte caps: ServerFrames are the
edge's frames (at most --max-frame-bytes, announced in Welcome); ClientFrames are capped by
--ws-max-message-bytes (over it: close 1009). The HTTP side serves the demo page and the
browser SDK bundle (pushplat.web); everything else is 404.
"""

from __future__ import annotations

import asyncio
import http
import logging
import ssl
from collections.abc import Awaitable
from typing import Any

from google.protobuf.message import DecodeError
from pushplat_client.v1 import edge_pb2
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from pushplat import web
from pushplat.config import Config
from pushplat.edge.frames import OutFrame, serialize
from pushplat.edge.lifecycle import SessionLifecycle
from pushplat.edge.origins import OriginCheck
from pushplat.edge.stream import DeviceStream, Dropped, Refused
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


class WsDeviceStream(DeviceStream):
    """One WebSocket connection as a device stream: each binary message is one ClientFrame
    read, each ServerFrame written is one binary message."""

    transport = "websocket"
    __slots__ = ("_connection", "_peer")

    def __init__(self, connection: ServerConnection, scheme: str) -> None:
        self._connection = connection
        host, port = connection.remote_address[:2]
        self._peer = f"{scheme}:{host}:{port}"

    @property
    def peer(self) -> str:
        return self._peer

    def read(self) -> Awaitable[edge_pb2.ClientFrame | object]:
        return self._read()

    async def _read(self) -> edge_pb2.ClientFrame | object:
        try:
            data = await self._connection.recv()
        except ConnectionClosedOK:
            return self.EOF  # a normal close (1000/1001): the device is done, as a gRPC half-close
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                LIMITS_HIT.labels("ws_message_bytes").inc()
            raise  # the lifecycle ends the session (stream_error); the library has closed the socket
        if isinstance(data, str):
            # The lifecycle answers a DecodeError with INVALID_ARGUMENT, as for a malformed frame.
            raise DecodeError(f"a text message; {SUBPROTOCOL} carries each ClientFrame in a binary message")
        return edge_pb2.ClientFrame.FromString(data)

    async def write(self, frame: OutFrame) -> None:
        await self._connection.send(serialize(frame))


def close_reason(refused: Refused) -> str:
    """The close reason for a status: its message (with the retry hint first), cut to 123 bytes."""
    hint = refused.retry_after_ms
    text = f"{RETRY_AFTER_PREFIX}{hint} {refused.message}" if hint is not None else refused.message
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class WebSocketEdge:
    """Serves `ws://HOST:PORT/connect` (wss:// with --tls-cert/--tls-key) beside the gRPC port."""

    def __init__(self, config: Config, lifecycle: SessionLifecycle) -> None:
        self.config = config
        self.lifecycle = lifecycle
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
            # --workers: every edge worker listens on the same WebSocket port, as on the gRPC one.
            reuse_port=config.reuse_port or None,
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
        stream = WsDeviceStream(connection, self._scheme)
        try:
            await self.lifecycle.serve(stream)
        except Refused as refused:
            await connection.close(STATUS_CLOSE_BASE + refused.code.value[0], close_reason(refused))
        except Dropped:
            # A write was stuck on a peer that stopped reading: a close frame would queue behind
            # it, so drop the TCP connection (the client sees 1006 and reconnects).
            connection.transport.abort()
        except ConnectionClosed:
            return  # closed under the read (the library has said why, e.g. 1009)
        else:
            await connection.close(CloseCode.NORMAL_CLOSURE)

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
