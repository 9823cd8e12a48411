"""The edge's trim policy (pushplat/memory_trim.py): a wave of ended sessions is trimmed when it
is over and once more an interval later, at most once per interval, and never when turned off."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from pushplat.memory_trim import MemoryTrimmer, glibc_trim, resident_bytes
from tests.helpers import eventually


def trims() -> float:
    return REGISTRY.get_sample_value("pushplat_memory_trims_total") or 0.0


class FakeTrim:
    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> int:
        self.at.append(time.monotonic())
        return 1


async def test_a_wave_is_trimmed_once_when_it_is_over():
    trim = FakeTrim()
    trimmer = MemoryTrimmer(5, after_bytes=1000, trim=trim, quiet_seconds=0.2)
    before = trims()
    trimmer.released(600)  # under after_bytes: not a wave yet
    await asyncio.sleep(0.3)
    assert trim.at == []
    last = time.monotonic()
    for _ in range(5):  # a wave: each close pushes the trim back until the closes stop
        trimmer.released(600)
        last = time.monotonic()
        await asyncio.sleep(0.05)
    await eventually(lambda: trim.at, timeout=5, what="the trim after the wave")
    assert trim.at[0] >= last + 0.2
    await asyncio.sleep(0.3)
    assert len(trim.at) == 1
    assert trims() == before + 1
    await trimmer.close()


async def test_a_wave_gets_one_follow_up_an_interval_later_and_no_more():
    trim = FakeTrim()
    trimmer = MemoryTrimmer(0.3, after_bytes=100, trim=trim, quiet_seconds=0.05)
    trimmer.released(100)
    await eventually(lambda: len(trim.at) == 2, timeout=5, what="the wave's trim and its follow-up")
    assert trim.at[1] - trim.at[0] >= 0.3
    await asyncio.sleep(0.8)  # nothing ended since: nothing more to give back
    assert len(trim.at) == 2
    await trimmer.close()


async def test_trims_are_at_least_one_interval_apart():
    trim = FakeTrim()
    trimmer = MemoryTrimmer(0.8, after_bytes=100, trim=trim, quiet_seconds=0.05)
    trimmer.released(100)
    await eventually(lambda: len(trim.at) == 1, timeout=5, what="the first trim")
    trimmer.released(100)  # the next wave comes at once; its trim waits out the interval
    await eventually(lambda: len(trim.at) == 2, timeout=5, what="the second trim")
    assert trim.at[1] - trim.at[0] >= 0.8
    await trimmer.close()


async def test_off_when_turned_off_or_when_there_is_no_malloc_trim():
    trim = FakeTrim()
    off = MemoryTrimmer(0, after_bytes=1, trim=trim, quiet_seconds=0)
    off.released(10**9)
    await asyncio.sleep(0.1)
    assert trim.at == []
    assert "memory.trim_off" in off.describe() and "--memory-trim-seconds 0" in off.describe()
    missing = MemoryTrimmer(10, after_bytes=1, trim=None)
    missing.released(10**9)
    assert "malloc_trim" in missing.describe()
    assert "memory.trim_on" in MemoryTrimmer(10, after_bytes=1, trim=trim).describe()


def test_glibc_trim_and_rss_on_linux():
    trim = glibc_trim()
    assert trim is not None, "this is a glibc system: malloc_trim must be found"
    assert trim() in (0, 1)
    assert resident_bytes() > 10 * 2**20


async def test_the_gc_pass_before_a_trim_takes_at_most_one_percent_of_the_time(monkeypatch):
    import pushplat.memory_trim as memory_trim

    passes: list[float] = []

    def slow_collect() -> int:
        passes.append(time.monotonic())
        time.sleep(0.02)  # stands for a full pass over many streams: 20 ms
        return 0

    monkeypatch.setattr(memory_trim, "collect_deliberately", slow_collect)
    trim = FakeTrim()
    trimmer = MemoryTrimmer(0.1, after_bytes=1, trim=trim, quiet_seconds=0.0)
    for wave in range(3):  # waves 0.1 s apart: a pass may come only 100 x 20 ms = 2 s after the last
        trimmer.released(10)
        await eventually(lambda wave=wave: len(trim.at) > wave, timeout=5, what=f"trim {wave}")
    assert len(passes) == 1 and passes[0] <= trim.at[0], (passes, trim.at)
    await trimmer.close()


async def test_a_closed_trimmer_schedules_nothing_more():
    trim = FakeTrim()
    trimmer = MemoryTrimmer(0.1, after_bytes=1, trim=trim, quiet_seconds=0.0)
    await trimmer.close()
    trimmer.released(10)  # a session still closing during shutdown
    trimmer.released(10)
    assert trimmer._timer is None and trimmer._task is None
    assert trim.at == []


async def test_a_failing_trim_is_logged_and_the_trimmer_carries_on(caplog):
    calls: list[int] = []

    def broken() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no")
        return 1

    trimmer = MemoryTrimmer(0.1, after_bytes=1, trim=broken, quiet_seconds=0.0)
    caplog.set_level("WARNING", logger="pushplat.memory")
    trimmer.released(10)
    await eventually(lambda: "event=memory.trim_failed" in caplog.text, timeout=5, what="the failure's line")
    trimmer.released(10)
    await eventually(lambda: len(calls) >= 2, timeout=5, what="the next trim")
    await trimmer.close()
