"""One client never stalls the edge's event loop for the others (issue 10): while one device
sends the largest allowed Ack frames and a sender the largest allowed SendBatch calls, another
device's ping round trips stay under 100 ms. Acks are processed in chunks with a yield between
them (pushplat/edge/acks.py), SendBatch yields every 64 requests (pushplat/api/servicer.py). The
load runs in other processes (tests/e2e/flood.py), so the pinger here measures the server only."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from pushplat_client.v1 import edge_pb2

from tests.helpers import RawDevice, free_port
from tests.processes import ProcessGroup, scrape

ROOT = Path(__file__).resolve().parents[2]
LOAD_SECONDS = 6.0


async def ping_round_trips(device: RawDevice, until: float) -> list[float]:
    ping = edge_pb2.ClientFrame(ping=edge_pb2.Ping())
    rtts = []
    while time.monotonic() < until:
        started = time.monotonic()
        await device.call.write(ping)
        while not (await asyncio.wait_for(device.call.read(), 5)).HasField("pong"):
            pass
        rtts.append(time.monotonic() - started)
        await asyncio.sleep(0.02)
    return rtts


def counter(body: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(line_start))


async def test_ping_round_trips_stay_short_under_the_largest_acks_and_batches(processes: ProcessGroup):
    metrics = free_port()
    dev = await processes.dev("--metrics-port", str(metrics))
    pinger = RawDevice(dev.edge)
    try:
        await pinger.hello(user_id="p", device_id="pinger")
        quiet = await ping_round_trips(pinger, time.monotonic() + 2.0)
        before = await asyncio.to_thread(scrape, metrics)
        loaders = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.e2e.flood", kind, address, str(LOAD_SECONDS),
                cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )
            for kind, address in (("acks", dev.edge), ("batches", dev.api))
        ]  # fmt: skip
        # Measure only while both loads run (each loader starts within a second).
        started = time.monotonic()
        loaded = await ping_round_trips(pinger, started + LOAD_SECONDS)
        outputs = [await asyncio.wait_for(p.communicate(), 60) for p in loaders]
        assert all(p.returncode == 0 for p in loaders), outputs
        ack_frames, send_batches = (int(out.split()[-1]) for out, _ in outputs)
        after = await asyncio.to_thread(scrape, metrics)
    finally:
        await pinger.close()
    accepted = counter(after, "pushplat_messages_in_total") - counter(before, "pushplat_messages_in_total")
    loaded.sort()
    print(
        f"acks: {ack_frames} frames of 1,000 ids; batches: {send_batches} x 500 ({accepted:.0f} accepted); "
        f"ping rtt quiet max {max(quiet) * 1000:.1f} ms, loaded median {loaded[len(loaded) // 2] * 1000:.1f} ms, "
        f"p90 {loaded[int(len(loaded) * 0.9)] * 1000:.1f} ms, p95 {loaded[int(len(loaded) * 0.95)] * 1000:.1f} ms, "
        f"p99 {loaded[int(len(loaded) * 0.99)] * 1000:.1f} ms, max {loaded[-1] * 1000:.1f} ms over {len(loaded)} pings",
        flush=True,
    )
    # The load was real: the edge read many maximum-size Ack frames and the api took every batch.
    assert ack_frames >= 20 and send_batches >= 3
    assert accepted == send_batches * 500
    # The 99th percentile, and a looser max: the machine's two cores are shared (load average 5-7
    # while this was written), so the OS deschedules the server now and then. A stall of the
    # server's loop recurs with every batch or ack frame (tens a second) and so would put far more
    # than 1% of the pings over 100 ms: before SendBatch yielded between chunks of 64 requests its
    # p90 was 30-37 ms, p99 up to 130 ms; after, p90 13-21 ms, p99 30-94 ms.
    # What the machine itself adds shows in the quiet round trips just before: that much on top.
    p99, noise = loaded[int(len(loaded) * 0.99)], max(quiet)
    assert p99 < 0.1 + noise, f"1% of ping round trips took over {p99 * 1000:.0f} ms (quiet: {noise * 1000:.0f} ms)"
    assert loaded[-1] < 0.5, f"a ping round trip took {loaded[-1] * 1000:.0f} ms"
