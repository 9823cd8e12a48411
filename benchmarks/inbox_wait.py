"""What --inbox-wait-replicas costs: the latency of one router batch's inbox write, with and
without WAIT, on a Redis you give (a cluster with replicas, for the figure that matters).

    .venv/bin/python benchmarks/inbox_wait.py redis+cluster://127.0.0.1:7000 [--batch 64] [--rounds 300]

It writes under a fresh key prefix and deletes it afterwards. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

from pushplat_client.v1 import message_pb2

from pushplat.inbox.redis import RedisInbox


async def measure(url: str, replicas: int, batch: int, rounds: int, timeout_ms: int) -> dict[str, object]:
    store = RedisInbox.from_url(url, wait_replicas=replicas, wait_timeout_ms=timeout_ms)
    try:
        entries = [
            ([f"d{i}"], message_pb2.Message(message_id=f"m{i}", payload=b"x" * 100, requires_ack=True))
            for i in range(batch)
        ]
        await store.put_many(entries)  # caches the script on every master
        took = []
        for _ in range(rounds):
            started = time.perf_counter()
            await store.put_many(entries)
            took.append(time.perf_counter() - started)
        took.sort()
        return {
            "wait_replicas": replicas,
            "batch": batch,
            "rounds": rounds,
            "p50_ms": round(statistics.median(took) * 1000, 3),
            "p99_ms": round(took[int(len(took) * 0.99) - 1] * 1000, 3),
            "us_per_message_p50": round(statistics.median(took) / batch * 1e6, 1),
        }
    finally:
        keys = [k async for k in store.client.scan_iter(match=f"{store.prefix}:*", count=1000)]
        for key in keys:
            await store.client.delete(key)
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="redis://... or redis+cluster://...")
    parser.add_argument("--batch", type=int, default=64, help="messages per inbox write (one router batch)")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--timeout-ms", type=int, default=100)
    parser.add_argument("--replicas", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    url = f"{args.url}{'&' if '?' in args.url else '?'}prefix={prefix}"
    for replicas in args.replicas:
        print(json.dumps(await measure(url, replicas, args.batch, args.rounds, args.timeout_ms)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
