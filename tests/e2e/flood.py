"""Load for tests/e2e/test_event_loop.py, run in its own process so that the test's pinger
measures the server's event loop and not its own:

    python -m tests.e2e.flood acks EDGE SECONDS     # the largest allowed Ack frames, 10 ms apart
    python -m tests.e2e.flood batches API SECONDS   # the largest allowed SendBatch calls, 10 ms apart

Prints how many frames or calls it sent, once the time is up.
"""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, push_pb2, push_pb2_grpc

from pushplat.limits import MAX_ACK_IDS, MAX_BATCH_REQUESTS, MAX_ID_BYTES

# The api's receive limit at the default --max-payload-bytes (pushplat/server.py): 4 MiB.
API_RECEIVE_LIMIT = 4 * 1024 * 1024
# Between sends: the test is about the longest single step of the server, not its throughput (that
# is scripts/bench), so the loads leave the server a core of the machine's two; back to back (with a
# OS's scheduling of four busy processes on two cores shows up in the round trips instead.
PAUSE_SECONDS = 0.01


def largest_batch() -> push_pb2.SendBatchRequest:
    """MAX_BATCH_REQUESTS requests, their payloads as large as the api's receive limit allows."""
    payload = (API_RECEIVE_LIMIT - 64 * 1024) // MAX_BATCH_REQUESTS
    request = push_pb2.SendBatchRequest(
        requests=[push_pb2.SendRequest(user_id="nobody", payload=b"x" * payload) for _ in range(MAX_BATCH_REQUESTS)]
    )
    assert request.ByteSize() <= API_RECEIVE_LIMIT
    return request


async def acks(edge: str, seconds: float) -> int:
    # MAX_ACK_IDS ids of MAX_ID_BYTES each: 131 KB, the largest Ack frame the edge accepts.
    frame = edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[f"{i:0{MAX_ID_BYTES}d}" for i in range(MAX_ACK_IDS)]))
    sent = 0
    async with grpc.aio.insecure_channel(edge) as channel:
        call = edge_pb2_grpc.EdgeStub(channel).Connect()
        await call.write(edge_pb2.ClientFrame(hello=edge_pb2.Hello(user_id="flood", device_id="acker")))
        assert (await call.read()).HasField("welcome")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await call.write(frame)
            sent += 1
            await asyncio.sleep(PAUSE_SECONDS)
        call.cancel()
    return sent


async def batches(api: str, seconds: float) -> int:
    request = largest_batch()
    sent = 0
    async with grpc.aio.insecure_channel(api) as channel:
        stub = push_pb2_grpc.PushStub(channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = await stub.SendBatch(request, timeout=30)
            assert len(response.responses) == MAX_BATCH_REQUESTS
            sent += 1
            await asyncio.sleep(PAUSE_SECONDS)
    return sent


if __name__ == "__main__":
    kind, address, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(asyncio.run({"acks": acks, "batches": batches}[kind](address, seconds)), flush=True)
