"""The collector policy every server process applies at start-up (pushplat/gc_policy.py)."""

import gc

import pytest
from prometheus_client import REGISTRY

from pushplat.gc_policy import MIDDLE_THRESHOLD, OLD_THRESHOLD, GcPolicy


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
