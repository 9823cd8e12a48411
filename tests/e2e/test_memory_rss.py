"""Memory of a real `pushplat dev` process (its RSS) under slow consumers and long runs (issue 10):
devices that stop reading are disconnected, with a status that says so, and RSS stops growing
round after round of them, and their memory comes back; a dropped session is freed as soon as it
ends (no reference cycle waits for the gc); and the in-memory stores stay within their bounds
however many messages go through."""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

import grpc
import pytest
from pushplat_client.v1 import message_pb2, push_pb2

from pushplat.edge.session import Session
from tests.helpers import Api, RawDevice, eventually, free_port
from tests.processes import DevServer, ProcessGroup, scrape

MiB = 1024 * 1024
ALO = message_pb2.AT_LEAST_ONCE
PAYLOAD = b"x" * (60 * 1024)
# Rounds of stuck devices: memory they leave behind would grow with each.
ROUNDS = 4
# Stuck devices on a connection of their own with a fixed flow-control window. On one shared
# with the warm-up reader, gRPC's BDP probe had grown the window so far that a device could take
# 8 MB without reading, and a user's devices then never went over their queue budget.
STUCK_DEVICE_OPTIONS = [("grpc.http2.bdp_probe", 0)]
# How far over the baseline RSS may stay once a round's slow consumers have left. Measured after
# the first trim that followed the devices' close: 40 rounds in 10 runs at load 1-3, -4.1 to +3.2 MiB (below
# zero: the baseline itself is not trimmed; the last round also keeps its 20 at-least-once
# messages, 1.2 MiB, in the inbox); earlier versions of this change, 88 rounds at load 1-14: -4.7
# to +6.1. With --memory-trim-seconds 0, 3 runs: the worst round of each run +10.1 to +18.0 MiB,
# unchanged 15 s later (before the trim existed, 6 runs: +10.6 to +20.6, median +16). 8 MiB is
# over every trimmed round and under every untrimmed run's worst.
COME_BACK_MARGIN = 8 * MiB


def rss(server: DevServer) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def metric(body: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these."""
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def read_all(device: RawDevice, count: int, timeout: float = 30) -> list[message_pb2.Message]:
    return await device.read_messages(count, timeout=timeout)


async def test_a_dropped_slow_consumer_is_freed_without_waiting_for_the_gc(start_platform, clients):
    """A session that lived for seconds is old for the gc, which collects old cycles rarely: a
    dropped session caught in a cycle keeps its queue and the frame whose write was stuck long
    after the device left. Ended with a status set on the call (not context.abort(), whose error
    and its traceback point back at the call), it is freed by reference counting alone."""
    # No trim: its full gc pass (memory_trim.py) would free the cycle this test must not have.
    server = await start_platform(slow_consumer_seconds=0.5, goaway_grace_seconds=0.5, memory_trim_seconds=0)
    device = clients("device", f"127.0.0.1:{server.ports.edge}")
    session_id = (await device.hello(device_id="never-reads")).session_id
    api = clients("api", f"127.0.0.1:{server.ports.api}")
    gc.collect()
    gc.disable()  # from here on, only reference counting frees anything

    def session_left() -> bool:
        return any(isinstance(o, Session) and o.session_id == session_id for o in gc.get_objects())

    try:
        await api.send_many([{"device_id": "never-reads", "payload": PAYLOAD}] * 200, concurrency=20)
        await eventually(lambda: server.edge.hub.get("never-reads") is None, what="the slow consumer's disconnect")
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(30):
                while await device.call.read() is not grpc.aio.EOF:
                    pass
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ended.value
        assert "slow consumer" in (ended.value.details() or ""), ended.value.details()
        await device.close()
        await eventually(lambda: not session_left(), what="the ended session to be freed")
    finally:
        gc.enable()


async def test_slow_consumers_are_disconnected_and_their_memory_comes_back(processes: ProcessGroup):
    metrics = free_port()
    # A short --slow-consumer-seconds, grace and --memory-trim-seconds keep the test fast; the
    # rules are the same at 5 s and 10 s. Small status and receipt-ring bounds, filled by the
    # warm-up: what stays afterwards is then what the stuck sessions left, not the (bounded)
    # history of 6,000 messages. The default gc policy: gRPC leaves a small reference cycle per
    # call (5 objects), and with the 50,000-object young generation some reach the old generation,
    # which the trim's full gc pass frees (without that pass: +5.0 to +7.6 MiB after 4 rounds;
    # with it, +0.6 to +3.5 over 3 runs; with Python's own thresholds, -0.1 to +0.6).
    dev = await processes.dev(
        "--metrics-port", str(metrics), "--slow-consumer-seconds", "1", "--goaway-grace-seconds", "1",
        "--memory-trim-seconds", "2",
        "--memory-status-bytes", str(256 * 1024), "--memory-receipt-events", "100",
    )  # fmt: skip
    api = Api(dev.api)
    stuck: list[RawDevice] = []
    try:
        # Warm up every path (and the allocator) with a device that reads, then take the baseline.
        reader = RawDevice(dev.edge)
        await reader.hello(user_id="warm", device_id="warm-1")
        for _ in range(30):  # rounds of 12 (720 KiB), within the device's 1 MiB queue budget
            sent = await api.send_many([{"device_id": "warm-1", "payload": PAYLOAD}] * 12)
            await read_all(reader, len(sent))
        await reader.close()
        baseline = rss(dev)

        peak = baseline

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss(dev))
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        after: list[float] = []
        for round_ in range(1, ROUNDS + 1):
            # One device that never reads, and one user with 20 devices that never read.
            for device_id, user_id in [("alone", "a"), *((f"b-{i}", "b") for i in range(20))]:
                device = RawDevice(dev.edge, options=STUCK_DEVICE_OPTIONS)
                await device.hello(user_id=user_id, device_id=device_id)
                stuck.append(device)
            if round_ == ROUNDS:
                # One at a time: concurrent Sends have no order, and the device must get these in order.
                at_least_once = await api.send_many(
                    [{"device_id": "alone", "payload": PAYLOAD, "delivery": ALO}] * 20, concurrency=1
                )
            await asyncio.gather(
                api.send_many([{"device_id": "alone", "payload": PAYLOAD}] * 3000, concurrency=50),
                api.send_many([{"user_id": "b", "payload": PAYLOAD}] * 150, concurrency=10),
            )

            seen = 0.0

            async def all_disconnected() -> bool:
                nonlocal seen
                body = await asyncio.to_thread(scrape, metrics)
                seen = metric(body, "pushplat_disconnects_total", reason="slow_consumer")
                return seen >= 21 * round_  # noqa: B023 (each round waits for its own)

            try:
                await eventually(all_disconnected, timeout=30, what="GoAway(SLOW_CONSUMER) for all 21 stuck devices")
            except BaseException:
                print(f"round {round_}: {seen:.0f} slow-consumer disconnects in all", flush=True)
                raise
            # What a stuck device finds once it reads again: what its flow-control window held (the
            # GoAway is queued behind the frame whose write was stuck), then a status that says why.
            ends: list[tuple[str, str]] = []
            for device in stuck:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    async with asyncio.timeout(10):
                        while await device.call.read() is not grpc.aio.EOF:
                            pass
                ends.append((ended.value.code().name, ended.value.details() or ""))
                await device.close()
            stuck.clear()
            assert {code for code, _ in ends} == {"RESOURCE_EXHAUSTED"}, ends
            assert all("slow consumer" in details for _, details in ends), ends
            # The memory comes back: the edge gives what the sessions freed back to the system
            # (--memory-trim-seconds): a second after the last of them closed, and once more an
            # interval later. A trim after the devices had read to the end and closed counts: only
            # then has gRPC let go of their streams' buffers.
            closed_at = metric(await asyncio.to_thread(scrape, metrics), "pushplat_memory_trims_total")
            latest = trims = 0.0

            async def back() -> bool:
                nonlocal latest, trims
                body = await asyncio.to_thread(scrape, metrics)
                trims = metric(body, "pushplat_memory_trims_total")
                latest = rss(dev)
                return trims > closed_at and latest - baseline < COME_BACK_MARGIN  # noqa: B023

            try:
                await eventually(back, timeout=30, what="a trim after the devices closed, and RSS near the baseline")
            except BaseException:
                print(f"round {round_}: {trims:.0f} trims, rss {latest / MiB:.1f} MiB, baseline {baseline / MiB:.1f}")
                raise
            after.append(latest)
        sampler.cancel()
        print(
            f"rss baseline {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, after each round of 21 stuck "
            f"devices: {', '.join(f'{r / MiB:.1f}' for r in after)} MiB",
            flush=True,
        )
        # The at-least-once messages waited in the inbox: the device gets them all on reconnect.
        back_again = RawDevice(dev.edge)
        await back_again.hello(user_id="a", device_id="alone")
        assert [m.message_id for m in await read_all(back_again, 20)] == [r.message_id for r in at_least_once]
        await back_again.close()
    finally:
        for device in stuck:
            await device.close()
        await api.close()


async def test_rss_stays_flat_over_200000_messages(processes: ProcessGroup):
    """Every message leaves something in the in-memory stores (an inbox entry, a status entry,
    receipt events, an idempotency key): with the stores bounded, RSS levels off once the bounds
    fill and stays there."""
    metrics = free_port()
    bounds = {
        "--memory-inbox-bytes": 16 * MiB,
        "--memory-status-bytes": 8 * MiB,
        "--memory-receipt-events": 2000,
        "--memory-idempotency-bytes": 8 * MiB,
    }
    args = [str(a) for item in bounds.items() for a in item]
    # --inbox-limit out of the way: the byte bound is what holds the one device's inbox.
    dev = await processes.dev("--metrics-port", str(metrics), "--inbox-limit", "1000000", *args)
    api = Api(dev.api)
    try:
        device = RawDevice(dev.edge)
        await device.hello(user_id="soak", device_id="soak-1")
        await device.close()  # enrolled, now offline: every message goes to its inbox

        sent = 0
        samples: dict[int, int] = {}

        async def send(batches: int) -> None:
            nonlocal sent
            for _ in range(batches):
                first = sent
                sent += 500
                request = push_pb2.SendBatchRequest(
                    requests=[
                        push_pb2.SendRequest(
                            device_id="soak-1", payload=b"x" * 200, delivery=ALO, idempotency_key=f"k-{first + i}"
                        )
                        for i in range(500)
                    ]
                )
                await api.stub.SendBatch(request, timeout=30)

        samples[0] = rss(dev)
        started = time.monotonic()
        for total in (50_000, 100_000, 150_000, 200_000):
            # Two calls in flight at a time.
            await asyncio.gather(send((total - sent) // 1000), send((total - sent) // 1000))
            samples[total] = rss(dev)
        elapsed = time.monotonic() - started
        body = await asyncio.to_thread(scrape, metrics)
    finally:
        await api.close()
    print(
        f"{sent} messages in {elapsed:.0f} s; rss "
        + ", ".join(f"{n // 1000}k: {r / MiB:.0f} MiB" for n, r in samples.items()),
        flush=True,
    )
    assert sent == 200_000
    # Each bound was reached, and entries went oldest first ever since.
    for store in ("inbox", "status", "idempotency"):
        assert metric(body, "pushplat_store_evictions_total", store=store) > 0, store
    # By 50,000 messages every bound has filled (the largest, the idempotency keys, at about
    # 22,000). Unbounded, the next 150,000 would add about 150,000 x 2.5 KiB (inbox, status,
    # events, key) = 360 MiB; bounded, nothing but the allocator's slack: 16 MiB is under 5% of it.
    assert samples[200_000] - samples[50_000] < 16 * MiB, samples
