"""Do two routers that start together both get partitions? Pairs of KafkaLaneConsumers, each
polled as a router polls it, started a random 0-400 ms apart on a Kafka you give, optionally
beside busy-looping processes (CPU starvation is what made kafka-python lose a join, see
KafkaLaneConsumer._finish_rebalance).

    .venv/bin/python benchmarks/kafka_rejoin.py kafka://127.0.0.1:9092 [--pairs 40] [--load 4]

Each pair gets fresh topics and group. A pair is "stuck" if after --timeout seconds either
member holds no partition. Prints one line per pair, then one JSON line. Not a test: a stuck
pair needs a busy machine (at --load 4 on 2 cores: 2 of 40 pairs before the work-around, 0 of
40 after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid

from pushplat.config import Config
from pushplat.messages import LANES
from pushplat.queue.kafka import KafkaLaneConsumer


async def route_like_a_router(consumer: KafkaLaneConsumer, stop: asyncio.Event) -> None:
    await consumer.start()
    while not stop.is_set():
        await consumer.keep_alive()
        await consumer.fetch(LANES, 100, 0.5)


def holds_partitions(consumer: KafkaLaneConsumer) -> bool:
    kafka = consumer._consumer  # a benchmark may look inside
    return kafka is not None and bool(kafka.assignment())


async def one_pair(url: str, session_ms: int, timeout: float) -> float | None:
    """Seconds until both members held partitions, or None if they did not within timeout."""
    config = Config(queue=url, topic_prefix=f"rejoin-{uuid.uuid4().hex[:10]}")
    config.kafka_session_timeout_ms = session_ms
    pair = [KafkaLaneConsumer.from_config(config), KafkaLaneConsumer.from_config(config)]
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = [asyncio.create_task(route_like_a_router(pair[0], stop))]
    await asyncio.sleep(random.uniform(0.0, 0.4))
    tasks.append(asyncio.create_task(route_like_a_router(pair[1], stop)))
    took: float | None = None
    while time.monotonic() - started < timeout:
        if all(holds_partitions(c) for c in pair):
            took = time.monotonic() - started
            break
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for consumer in pair:
        await consumer.close()
    return took


async def run_pairs(args: argparse.Namespace) -> tuple[list[float], int]:
    times: list[float] = []
    stuck = 0
    for i in range(args.pairs):
        took = await one_pair(args.url, args.session_timeout_ms, args.timeout)
        print(f"pair {i + 1}: " + (f"both hold partitions after {took:.1f} s" if took is not None else "STUCK"))
        if took is None:
            stuck += 1
        else:
            times.append(took)
    return times, stuck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="kafka://host:port")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes beside the pairs")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds a pair has to hold partitions")
    args = parser.parse_args()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        times, stuck = asyncio.run(run_pairs(args))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    times.sort()
    summary = {
        "pairs": args.pairs,
        "load": args.load,
        "stuck": stuck,
        "p50_s": round(times[len(times) // 2], 2) if times else None,
        "max_s": round(times[-1], 2) if times else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
