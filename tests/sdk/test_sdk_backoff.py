"""Backoff: exponential growth, full jitter, cap, reset."""

from __future__ import annotations

import random

import pytest
from pushplat_client import Backoff


def test_full_jitter_stays_within_the_exponential_window() -> None:
    backoff = Backoff(base=0.2, cap=30.0, rng=random.Random(7))
    for attempt in range(8):
        ceiling = min(30.0, 0.2 * 2**attempt)
        assert backoff.ceiling() == pytest.approx(ceiling)
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling


def test_jitter_is_full_not_a_fixed_fraction() -> None:
    # Full jitter draws from [0, ceiling]: over many draws at the cap we see both small and
    # large delays, not a narrow band near the ceiling.
    backoff = Backoff(base=1.0, cap=1.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(500)]
    assert min(delays) < 0.1
    assert max(delays) > 0.9
    assert all(0.0 <= d <= 1.0 for d in delays)


def test_cap_bounds_every_delay_and_attempts_stop_growing() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(3))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert max(delays) <= 4.0
    assert backoff.ceiling() == 4.0
    # The exponent stops at the cap, so a long outage cannot overflow 2**attempt.
    assert backoff.attempt <= 4


def test_seeded_rng_is_reproducible() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay() for _ in range(10)] == [b.next_delay() for _ in range(10)]


def test_reset_starts_again_from_base() -> None:
    backoff = Backoff(base=0.1, cap=10.0, rng=random.Random(5))
    for _ in range(6):
        backoff.next_delay()
    assert backoff.ceiling() == pytest.approx(6.4)
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.ceiling() == pytest.approx(0.1)
    assert 0.0 <= backoff.next_delay() <= 0.1


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_rejects_bad_parameters(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base=base, cap=cap)
