"""EdgeServicer: the device-facing ``Edge.Connect`` over gRPC, one transport of the session
lifecycle (see edge/stream.py for the seam other transports implement)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

import grpc
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc

from pushplat.edge.frames import OutFrame, serialize
from pushplat.edge.lifecycle import SessionLifecycle
from pushplat.edge.stream import DeviceStream, Dropped, Refused

RETRY_AFTER_KEY = "retry-after-ms"


class GrpcDeviceStream(DeviceStream):
    """A bidirectional Edge.Connect call. Frames are read with context.read(): the request
    iterator is never touched, so no async generator is made per stream (and none is left
    unread to warn at exit)."""

    transport = "grpc"
    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    @property
    def peer(self) -> str:
        return self._context.peer()

    EOF = grpc.aio.EOF

    def read(self) -> Awaitable[edge_pb2.ClientFrame | object]:
        return self._context.read()

    async def write(self, frame: OutFrame) -> None:
        await self._context.write(frame)


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    def __init__(self, lifecycle: SessionLifecycle) -> None:
        self.lifecycle = lifecycle

    async def Connect(
        self, request_iterator: AsyncIterator[edge_pb2.ClientFrame], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            await self.lifecycle.serve(GrpcDeviceStream(context))
        except Refused as refused:
            # Raised only once no write is in flight: gRPC takes one send operation at a time,
            # and a status sent during a write would fail and leave the stream hanging.
            trailers = () if refused.retry_after_ms is None else ((RETRY_AFTER_KEY, str(refused.retry_after_ms)),)
            end_call(context, refused.code, refused.message, trailers)
        except Dropped as dropped:
            # A write was stuck on a peer that stopped reading; the lifecycle has cancelled it, so
            # the call takes a status again. (Raising CancelledError instead leaves the HTTP/2
            # stream open at the client: it reads what its window held, then waits forever.)
            end_call(context, *dropped_status(str(dropped)))


def end_call(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()
) -> None:
    """End the call with this status when the handler returns. Not context.abort(): it keeps its
    AbortError on the call, and that error's traceback holds the handler's frames and so the call
    and its session (with the frame whose write was stuck): a cycle of objects old enough that
    only a full gc pass frees them, long after the device left."""
    context.set_code(code)
    context.set_details(message)
    if trailers:
        context.set_trailing_metadata(trailers)


def dropped_status(reason: str) -> tuple[grpc.StatusCode, str]:
    """The status a stream ends with when the edge gives up on a peer that does not read."""
    if reason == "slow_consumer":
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the device read more slowly than messages arrived and was disconnected (slow consumer, "
            "--slow-consumer-seconds); at-least-once messages wait in the inbox: reconnect and read",
        )
    return grpc.StatusCode.UNAVAILABLE, f"the session ended ({reason or 'closed'}) while a write was stuck; reconnect"


def add_edge_servicer(servicer: EdgeServicer, server: grpc.aio.Server) -> None:
    """As the generated add_EdgeServicer_to_server, but a frame may already be bytes (a PushBatch
    is written as its messages' encodings joined: edge/frames.py)."""
    handlers = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            servicer.Connect,
            request_deserializer=edge_pb2.ClientFrame.FromString,
            response_serializer=serialize,
        )
    }
    service = edge_pb2.DESCRIPTOR.services_by_name["Edge"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
