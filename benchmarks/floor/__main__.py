"""The transport's floor: a stand-in for `pushplat dev` that does the least any grpc.aio
push server must do, so `scripts/bench --floor` measures what the stack itself costs per
delivered message on this machine (see benchmarks/README.md).

Per message it does what pushplat does at minimum: parse the Send, hand the message to the
device's stream through a queue, write one frame, and read the device's ack. No validation,
routing, receipts, limits or metrics. It is not pushplat and holds no guarantees; it exists
so that pushplat's figures can be read against the cheapest server the same stack allows.
It runs with pushplat's own gRPC server options and collector policy (imported, not copied),
so neither side pays for what the other avoids. `python -m floor dev` in benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from collections.abc import AsyncIterator

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, message_pb2, push_pb2, push_pb2_grpc

from pushplat.config import Config
from pushplat.gc_policy import GcPolicy
from pushplat.server import SERVER_OPTIONS

ROLES = ("dev",)
_ids = itertools.count()


class Edge(edge_pb2_grpc.EdgeServicer):
    def __init__(self, streams: dict[str, asyncio.Queue[edge_pb2.ServerFrame]]) -> None:
        self.streams = streams

    async def Connect(self, requests: AsyncIterator[edge_pb2.ClientFrame], context: grpc.aio.ServicerContext) -> None:
        # context.read()/write(), as pushplat's edge does (edge/servicer.py).
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("hello"):
            return
        device_id = first.hello.device_id
        queue: asyncio.Queue[edge_pb2.ServerFrame] = asyncio.Queue()
        self.streams[device_id] = queue
        welcome = edge_pb2.Welcome(session_id=f"s{next(_ids)}", edge_id="floor", heartbeat_interval_ms=30_000)
        await context.write(edge_pb2.ServerFrame(welcome=welcome))
        reader = asyncio.create_task(_drain(context))
        try:
            while True:
                await context.write(await queue.get())
        finally:
            reader.cancel()
            if self.streams.get(device_id) is queue:
                del self.streams[device_id]


async def _drain(context: grpc.aio.ServicerContext) -> None:
    """Acks and pings: read, as an edge must, and dropped."""
    while await context.read() is not grpc.aio.EOF:
        pass


class Push(push_pb2_grpc.PushServicer):
    def __init__(self, streams: dict[str, asyncio.Queue[edge_pb2.ServerFrame]]) -> None:
        self.streams = streams

    def _hand_off(self, request: push_pb2.SendRequest) -> push_pb2.SendResponse:
        message_id = f"m{next(_ids)}"
        queue = self.streams.get(request.device_id)
        if queue is not None:
            message = message_pb2.Message(message_id=message_id, payload=request.payload, requires_ack=True)
            queue.put_nowait(edge_pb2.ServerFrame(pushes=edge_pb2.PushBatch(messages=[message])))
        return push_pb2.SendResponse(message_id=message_id)

    async def Send(self, request: push_pb2.SendRequest, context: grpc.aio.ServicerContext) -> push_pb2.SendResponse:
        return self._hand_off(request)

    async def SendBatch(
        self, request: push_pb2.SendBatchRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.SendBatchResponse:
        return push_pb2.SendBatchResponse(responses=[self._hand_off(r) for r in request.requests])

    async def SendStream(self, requests: AsyncIterator[push_pb2.SendRequest], context: grpc.aio.ServicerContext):  # type: ignore[override]
        async for request in requests:
            response = self._hand_off(request)
            response.request_id = request.request_id
            yield response


async def serve(args: argparse.Namespace) -> None:
    streams: dict[str, asyncio.Queue[edge_pb2.ServerFrame]] = {}
    servers = []
    for port, add in (
        (args.edge_port, lambda s: edge_pb2_grpc.add_EdgeServicer_to_server(Edge(streams), s)),
        (args.api_port, lambda s: push_pb2_grpc.add_PushServicer_to_server(Push(streams), s)),
    ):
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add(server)
        checks = health.aio.HealthServicer()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        server.add_insecure_port(f"{args.host}:{port}")
        await server.start()
        servers.append(server)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.gather(*(s.stop(0) for s in servers))


def main() -> None:
    parser = argparse.ArgumentParser(prog="floor dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--edge-port", type=int, default=50051)
    parser.add_argument("--api-port", type=int, default=50052)
    # Accepted so the bench can pass them; the floor has no such features.
    for ignored in ("--log-level", "--metrics-port", "--drain-seconds", "--delivery-port", "--ws-port"):
        parser.add_argument(ignored, help="accepted and ignored")
    args = parser.parse_args()
    GcPolicy(Config().gc_young_objects).apply()
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
