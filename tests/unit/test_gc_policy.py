"""The collector policy every server process applies at start-up (pushplat/gc_policy.py)."""

import gc

import pytest
from prometheus_client import REGISTRY

from pushplat.gc_policy import MIDDLE_THRESHOLD, OLD_THRESHOLD, GcPolicy, collect_deliberately


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def pauses(generation: int) -> float:
    return REGISTRY.get_sample_value("pushplat_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_the_policy_sets_the_young_generation_and_times_every_collection(restore_gc):
    policy = GcPolicy(50_000)
    policy.apply()
    try:
        assert gc.get_threshold() == (50_000, MIDDLE_THRESHOLD, OLD_THRESHOLD)
        before = pauses(2)
        gc.collect()
        assert pauses(2) == before + 1
        assert gc.get_freeze_count() > 0, "start-up's objects are kept out of later collections"
    finally:
        policy.remove()
    before = pauses(2)
    gc.collect()
    assert pauses(2) == before, "removed: collections are no longer timed"


def test_zero_keeps_pythons_own_thresholds(restore_gc):
    gc.set_threshold(700, 10, 10)
    policy = GcPolicy(0)
    policy.apply()
    policy.remove()
    assert gc.get_threshold() == (700, 10, 10) and gc.get_freeze_count() == 0


def test_a_slow_pause_is_logged_once_a_minute_at_most(restore_gc, monkeypatch, caplog):
    monkeypatch.setattr("pushplat.gc_policy.SLOW_PAUSE_SECONDS", 0.0)  # every pause is "slow"
    policy = GcPolicy(50_000)
    policy.apply()
    caplog.set_level("WARNING", logger="pushplat.gc")
    try:
        gc.collect()
        gc.collect()
    finally:
        policy.remove()
    lines = [r.getMessage() for r in caplog.records if "event=gc.slow_pause" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "generation=2" in lines[0] and "pause_ms=" in lines[0] and "old_objects=" in lines[0]
    assert "--gc-young-objects" in lines[0]


def test_a_slow_pass_the_memory_trim_chose_says_so_not_to_retune_the_collector(restore_gc, monkeypatch, caplog):
    monkeypatch.setattr("pushplat.gc_policy.SLOW_PAUSE_SECONDS", 0.0)
    policy = GcPolicy(50_000)
    policy.apply()
    caplog.set_level("WARNING", logger="pushplat.gc")
    try:
        collect_deliberately()
    finally:
        policy.remove()
    lines = [r.getMessage() for r in caplog.records if "event=gc.slow_pause" in r.getMessage()]
    assert len(lines) == 1 and "memory trim" in lines[0] and "--memory-trim-seconds" in lines[0], lines
    assert "--gc-young-objects" not in lines[0]
