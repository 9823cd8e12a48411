"""RecentIds: bounded LRU memory of message ids."""

from __future__ import annotations

import pytest
from pushplat_client import RecentIds


def test_seen_records_then_reports() -> None:
    ids = RecentIds(capacity=4)
    assert ids.seen("a") is False
    assert ids.seen("a") is True
    assert "a" in ids
    assert len(ids) == 1


def test_bounded_to_capacity() -> None:
    ids = RecentIds(capacity=100)
    for i in range(1000):
        ids.seen(f"m{i}")
    assert len(ids) == 100
    assert "m999" in ids
    assert "m899" not in ids


def test_evicts_least_recently_used() -> None:
    ids = RecentIds(capacity=3)
    for mid in ("a", "b", "c"):
        ids.seen(mid)
    # A repeat refreshes "a", so "b" is now the oldest and goes first.
    assert ids.seen("a") is True
    ids.seen("d")
    assert "b" not in ids
    assert {"a", "c", "d"} == {m for m in ("a", "b", "c", "d") if m in ids}
    # An evicted id is new again.
    assert ids.seen("b") is False


def test_contains_does_not_refresh() -> None:
    ids = RecentIds(capacity=2)
    ids.seen("a")
    ids.seen("b")
    assert "a" in ids  # membership only
    ids.seen("c")
    assert "a" not in ids


def test_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError):
        RecentIds(capacity=0)
