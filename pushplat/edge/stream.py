"""The transport seam: what a device session needs from the connection it runs on.

A device stream reads ClientFrames, writes ServerFrames and ends with a status. That is all
the session lifecycle (``SessionLifecycle.serve``: Hello and auth, admission, Welcome, acks,
heartbeats, max age, GoAway, drain, replacement, registry, inbox replay, metrics) asks of a
transport, so every transport gets the whole lifecycle by implementing this one class.

gRPC's ``Edge.Connect`` is one transport (``pushplat/edge/servicer.py``), WebSocket the other
(``pushplat/edge/websocket.py``, issue 13): per accepted socket (subprotocol ``pushplat.v1``) a
DeviceStream whose read() parses one binary message as a ClientFrame (raising DecodeError for
bytes that are not one) and whose write() sends the serialized ServerFrame as one binary
message, with ``transport = "websocket"``; then ``await lifecycle.serve(stream)``. Returning is a
clean end (gRPC's OK; WebSocket closes 1000); a raised ``Refused`` carries the status to end with
(gRPC: the status and a retry-after-ms trailer; WebSocket: close code 4000 + code, the retry hint
and message in the reason); ``Dropped`` ends it at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable

import grpc
from pushplat_client.v1 import edge_pb2

from pushplat.edge.frames import OutFrame

__all__ = ["DeviceStream", "Dropped", "Refused"]


class Refused(Exception):
    """End the stream with this status (gRPC code, message that says what to fix, and an optional
    retry hint). The lifecycle raises it; the transport turns it into its own way of ending."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


class Dropped(Exception):
    """End the stream now: a write was stuck on a peer that stopped reading (the lifecycle has
    cancelled it); the argument is the session's close reason. gRPC: end with a status (the client
    gets it after what its flow-control window held); WebSocket: abort the socket."""


class DeviceStream(ABC):
    """One device connection, as the session lifecycle sees it."""

    __slots__ = ()
    #: The value of the ``transport`` label on the edge's connection metrics ("grpc", "websocket").
    transport: str = ""
    #: What read() gives once the device has finished sending (half-close or a clean close).
    EOF: object = None

    @property
    @abstractmethod
    def peer(self) -> str:
        """Who is on the other end, for logs (e.g. "ipv4:10.0.0.7:51234")."""

    @abstractmethod
    def read(self) -> Awaitable[edge_pb2.ClientFrame | object]:
        """An awaitable of the next frame from the device, or of ``EOF``. Raises (when awaited)
        google.protobuf.message.DecodeError for bytes that are not a ClientFrame, and any other
        exception when the connection broke. (An awaitable rather than a coroutine, so that an idle
        stream's pending read is only the transport's own.)"""

    @abstractmethod
    async def write(self, frame: OutFrame) -> None:
        """Send one frame (a ServerFrame, or one already serialized: edge/frames.py). Called by
        one task at a time; may wait for the device to read (flow control). The lifecycle cancels
        a write stuck on a dead peer."""
