"""The router's own CPU per message, without the network: a RouterNode on in-process lanes, an
in-memory registry and inbox, and an in-process edge that only counts what it is handed.

    .venv/bin/python benchmarks/router_cpu.py [--messages 50000] [--devices 1000] [--at-least-once]

Everything runs in this one process, so the CPU time it used while the messages went through
(time.process_time) is the router's, plus the lanes' and stores' in-memory work. Prints one
JSON line. Run it against another checkout with PYTHONPATH=that-checkout to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from pushplat_client.v1 import message_pb2

from pushplat.config import Config
from pushplat.edge_link import LocalEdgeLink
from pushplat.inbox.memory import MemoryInbox
from pushplat.queue.memory import MemoryLaneConsumer, MemoryLaneProducer, MemoryLanes
from pushplat.receipts.memory import MemoryReceipts
from pushplat.registry import Route
from pushplat.registry.memory import MemoryRegistry
from pushplat.router import RouterNode
from pushplat.v1 import delivery_pb2

QUEUED = delivery_pb2.DeliverResponse.Outcome.QUEUED


class CountingEdge:
    def __init__(self, expected: int) -> None:
        self.count = 0
        self.expected = expected
        self.done = asyncio.Event()

    def deliver(self, edge_id: str, items) -> list[int]:  # type: ignore[no-untyped-def]
        self.count += len(items)
        if self.count >= self.expected:
            self.done.set()
        return [QUEUED] * len(items)

    def evict(self, request: delivery_pb2.EvictRequest) -> bool:
        return False


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=1_000)
    parser.add_argument("--at-least-once", action="store_true")
    args = parser.parse_args()
    registry = MemoryRegistry()
    await registry.set_edge("e", "in-process", 3600)
    for i in range(args.devices):
        await registry.register(Route(f"d{i}", f"u{i}", "e", f"s{i}"), 3600)
    lanes = MemoryLanes()
    producer = MemoryLaneProducer(lanes)
    edge = CountingEdge(args.messages)
    router = RouterNode(
        Config(),
        registry,
        MemoryLaneConsumer(lanes),
        MemoryInbox(),
        MemoryReceipts(max_messages=1000, max_events=1000),
        LocalEdgeLink(edge),
    )
    for i in range(args.messages):
        message = message_pb2.Message(message_id=f"m{i}", payload=b"x" * 100, requires_ack=args.at_least_once)
        await producer.publish("normal", delivery_pb2.Envelope(device_id=f"d{i % args.devices}", message=message))
    cpu, wall = time.process_time(), time.perf_counter()
    await router.start()
    await asyncio.wait_for(edge.done.wait(), 600)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await router.stop()
    print(
        json.dumps(
            {
                "messages": args.messages,
                "at_least_once": args.at_least_once,
                "cpu_us_per_message": round(cpu / args.messages * 1e6, 1),
                "messages_per_s": round(args.messages / wall),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
