"""Python's cycle collector, tuned for a server that holds many long-lived objects per connection.

An edge keeps about 85 collector-tracked objects per open stream (the gRPC call's state, its
reader, the session). With Python's default thresholds (700, 10, 10) the short-lived objects of a
burst (a topic fan-out starts a writer on every subscribed session) outlive the young collections,
are promoted, and soon trigger a full collection that walks every connection's objects: measured
0.2-1.1 s per full collection at 5,000 streams, with no delivery meanwhile. A young generation of
tens of thousands of objects lets a burst's objects die before any collection sees them, and
freezing what start-up made (modules, classes, functions: never garbage) keeps it out of every
full collection. (What start-up made and later drops, if caught in a cycle, is never collected:
a fixed, small amount.)
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from pushplat.logs import kv
from pushplat.metrics import GC_PAUSE

log = logging.getLogger("pushplat.gc")

# The older generations: a full collection may run after 10 middle ones (each after 20 young
# ones), and CPython runs it only once the objects promoted since the last one reach 25 % of the
# old generation. That rule bounds old garbage (gRPC leaves a 5-object cycle per call, which a
# long-lived stream's call carries into the old generation) at about a quarter of what lives
# there; a larger OLD_THRESHOLD would let it pile up for millions of ended connections.
MIDDLE_THRESHOLD = 20
# Largest --gc-young-objects: past this the young collections themselves become long pauses
# (and past 2**31 CPython refuses the threshold with an OverflowError).
MAX_YOUNG_OBJECTS = 10_000_000
OLD_THRESHOLD = 10
# A pause this long (wall time: a process starved of CPU pauses longer) is logged as well as
# counted, at most one line a minute.
SLOW_PAUSE_SECONDS = 0.1
_LOG_INTERVAL_SECONDS = 60.0
_COLLECTOR_HINT = "raise --gc-young-objects if this repeats"
_DELIBERATE_HINT = "the memory trim's own full pass; raise --memory-trim-seconds (or 0: off) if it hurts"
_deliberate = False


def collect_deliberately() -> int:
    """gc.collect() for a caller that chose the moment (the memory trim): its pause, if slow,
    is logged as that caller's doing, not as a hint to retune the collector."""
    global _deliberate
    _deliberate = True
    try:
        return gc.collect()
    finally:
        _deliberate = False


class GcPolicy:
    """Sets the thresholds, freezes start-up's objects and times every collection."""

    def __init__(self, young_objects: int) -> None:
        self.young_objects = young_objects
        self._started = 0.0
        self._last_log = -_LOG_INTERVAL_SECONDS
        self._pauses = [GC_PAUSE.labels(str(generation)) for generation in range(3)]

    def apply(self) -> None:
        """Called before the server starts, once everything is imported: what exists now (modules,
        classes, functions) lives as long as the process, so it is frozen out of collections.
        Before, not after, the start: a worker must handle SIGTERM as soon as its ports are open."""
        if self.young_objects > 0:
            gc.set_threshold(self.young_objects, MIDDLE_THRESHOLD, OLD_THRESHOLD)
            gc.collect()
            gc.freeze()
        if self._on_collect not in gc.callbacks:
            gc.callbacks.append(self._on_collect)

    def log_started(self) -> None:
        """Logged once the server is up, not in apply(): a refused start prints one line only."""
        thresholds = ",".join(map(str, gc.get_threshold()))
        log.info(kv("gc.policy", thresholds=thresholds, frozen_objects=gc.get_freeze_count()))

    def remove(self) -> None:
        if self._on_collect in gc.callbacks:
            gc.callbacks.remove(self._on_collect)

    def _on_collect(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: nothing here may take a lock that code allocating tracked
        # objects could hold (prometheus-client's metric locks never are).
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self._pauses[generation].observe(pause)
        if pause >= SLOW_PAUSE_SECONDS and self._started - self._last_log >= _LOG_INTERVAL_SECONDS:
            self._last_log = self._started
            log.warning(
                kv(
                    "gc.slow_pause",
                    generation=generation,
                    pause_ms=round(pause * 1000, 1),
                    collected=info["collected"],
                    # What a full collection walks (the frozen start-up objects aside).
                    old_objects=len(gc.get_objects(2)),
                    detail=_DELIBERATE_HINT if _deliberate else _COLLECTOR_HINT,
                )
            )
