"""Give memory back to the OS after a wave of sessions ends (slow consumers, say).

glibc keeps what the process frees for reuse, and on its own returns only the free space at the
top of each heap. What sessions held is freed in holes below the live data (measured after 21
slow consumers: ~23 MiB free in 370 holes of the main heap, 48 bytes at its top), so RSS stays
at the wave's high-water mark. malloc_trim(0) gives back every free page of every arena
(measured: 1.2-2.4 ms for a 40 MiB heap). It runs in a thread, never on the event loop, once the
closes have gone quiet, and at most once per --memory-trim-seconds: while it holds an arena's
lock, a thread allocating from that arena waits (the event loop included, for at most that long).
Some of a session's memory is freed after it closed (gRPC's buffers for a stream whose status
waits for the device to read what its window holds): one more trim an interval after each wave
returns that too.

Before each trim, one full pass of Python's cycle collector, on the event loop: with the edge's
large young generation (gc_policy.py) full passes are rare, and cyclic garbage that reached the
old generation (gRPC leaves a 5-object cycle per call) would otherwise sit in the holes the trim
is meant to return (measured: +6.5 MiB after 4 waves without it, +3.2 with it). It pauses every
stream (2-6 ms with a few dozen open; it walks ~85 objects per open stream), at most once per
--memory-trim-seconds, only after a wave of ended sessions that had queued half a
--session-queue-bytes, and never more than 1 % of the time (GC_PASS_SPACING): a client that
makes waves on purpose gets trims without the pass.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import time
from collections.abc import Callable

from pushplat.gc_policy import collect_deliberately
from pushplat.logs import kv
from pushplat.metrics import MEMORY_TRIMMED_BYTES, MEMORY_TRIMS

log = logging.getLogger("pushplat.memory")

# A wave is over once no session has ended (with something queued) for this long: one trim then
# returns what the whole wave freed.
QUIET_SECONDS = 1.0
# The full gc pass before a trim pauses every stream, so it runs only if the last one was at
# least this many times its own duration ago: at most 1 % of the event loop's time, whatever
# clients do (a pass at 5,000 streams takes 0.2-1.1 s). Otherwise the trim runs alone.
GC_PASS_SPACING = 100
# Shortest --memory-trim-seconds (0 aside): each trim walks every arena.
MIN_INTERVAL_SECONDS = 1.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def glibc_trim() -> Callable[[], int] | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def resident_bytes() -> int:
    """This process's RSS (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class MemoryTrimmer:
    """Counts what ending sessions had queued; once that reaches ``after_bytes`` and the closes
    have been quiet for ``quiet_seconds`` (or ``interval_seconds`` have passed, for a steady
    trickle), trims in a thread, and once more ``interval_seconds`` later (a follow-up); at most
    once per ``interval_seconds``. ``interval_seconds`` 0 (or a C library without malloc_trim)
    turns it off."""

    def __init__(
        self,
        interval_seconds: float,
        after_bytes: int,
        trim: Callable[[], int] | None,
        quiet_seconds: float = QUIET_SECONDS,
    ) -> None:
        """``trim`` gives memory back (glibc_trim(); None where there is none)."""
        self.interval_seconds = interval_seconds
        self.after_bytes = after_bytes
        self.quiet_seconds = quiet_seconds
        self._trim = trim
        self.enabled = interval_seconds > 0 and trim is not None
        self._pending = 0
        self._sessions = 0
        self._first = 0.0
        self._last = 0.0
        self._done_at = float("-inf")
        self._follow_up = False  # the next trim is a wave's follow-up
        self._gc_at = float("-inf")  # when the last full gc pass ended, and how long it took
        self._gc_took = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        if self._trim is None:
            return kv("memory.trim_off", reason="the C library has no malloc_trim")
        if not self.enabled:
            return kv("memory.trim_off", reason="--memory-trim-seconds 0")
        return kv("memory.trim_on", at_most_every_s=f"{self.interval_seconds:g}", after_bytes=self.after_bytes)

    def released(self, nbytes: int) -> None:
        """A session ended with ``nbytes`` queued (called on the event loop; O(1))."""
        if not self.enabled or nbytes <= 0:
            return
        now = time.monotonic()
        if not self._pending:
            self._first = now
        self._pending += nbytes
        self._sessions += 1
        self._last = now
        if self._pending >= self.after_bytes:
            self._follow_up = False  # a wave again: its own trim (and follow-up) come first
            if self._timer is None and self._task is None:
                self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(self._due() - time.monotonic(), 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._due() > time.monotonic():  # the wave went on: wait for it to end
            self._schedule()
        else:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        pending, sessions = self._pending, self._sessions
        follow_up = self._follow_up
        self._pending = self._sessions = 0
        self._follow_up = False
        collected_in: float | None = None
        try:
            if time.monotonic() - self._gc_at >= GC_PASS_SPACING * self._gc_took:
                started = time.perf_counter()
                collect_deliberately()  # see the module docstring: frees what only a full pass finds, first
                collected_in = self._gc_took = time.perf_counter() - started
                self._gc_at = time.monotonic()
            before, after, took = await asyncio.to_thread(self._trim_now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a trim is an optimisation: never the end of the trimmer
            log.warning(kv("memory.trim_failed", error=repr(exc)))
            return
        finally:
            self._task = None
            self._done_at = time.monotonic()
        returned = max(before - after, 0)
        MEMORY_TRIMS.inc()
        MEMORY_TRIMMED_BYTES.inc(returned)
        log.info(
            kv(
                "memory.trim",
                follow_up=follow_up or None,
                sessions=sessions,
                queued_bytes=pending,
                rss_before_mib=round(before / 2**20, 1),
                rss_after_mib=round(after / 2**20, 1),
                took_ms=round(took * 1000, 1),
                gc_ms=None if collected_in is None else round(collected_in * 1000, 1),
            )
        )
        if self._pending < self.after_bytes and not follow_up:
            self._follow_up = True
        if self._follow_up or self._pending >= self.after_bytes:
            self._schedule()

    def _due(self) -> float:
        """When the next trim may run: the wave is quiet (or has gone on for a whole interval),
        and the last trim was an interval ago."""
        if self._follow_up:
            return self._done_at + self.interval_seconds
        wave_over = min(self._last + self.quiet_seconds, self._first + self.interval_seconds)
        return max(wave_over, self._done_at + self.interval_seconds)

    def _trim_now(self) -> tuple[int, int, float]:
        """RSS before and after a trim, and how long the trim took (it holds each arena's lock in
        turn for part of that)."""
        assert self._trim is not None
        before = resident_bytes()
        started = time.perf_counter()
        self._trim()
        took = time.perf_counter() - started
        return before, resident_bytes(), took

    async def close(self) -> None:
        self.enabled = False  # sessions still closing during shutdown schedule nothing more
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
