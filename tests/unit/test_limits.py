"""The bounded structures behind the limits: ids, the per-sender rate table, label metrics."""

import re

import pytest
from prometheus_client import REGISTRY

from pushplat.api.ratelimit import SenderRateLimiter
from pushplat.limits import LimitExceeded, check_id, check_labels
from pushplat.metrics import OTHER_LABEL_VALUE, LabelMetrics


def test_ids():
    for good in ("d", "a" * 128, "é" * 64, "ユーザー", "with space", "{x}"):
        check_id("device_id", good)
    for bad, text in (
        ("", "is empty"),
        (" \t", "only whitespace"),
        ("a" * 129, "129 bytes"),
        ("é" * 65, "130 bytes"),
        ("a\x7fb", "U+007F at offset 1"),
        ("a\u2028b", "U+2028 at offset 1"),
    ):
        with pytest.raises(LimitExceeded, match=re.escape(text)) as info:
            check_id("device_id", bad)
        assert info.value.limit == "id" and str(info.value).startswith("device_id ")
    with pytest.raises(LimitExceeded) as info:
        check_id("device_id", "x" * 1_000_000)
    assert len(str(info.value)) < 200


def test_labels():
    check_labels({f"k{i}": "v" * 256 for i in range(16)})
    with pytest.raises(LimitExceeded, match="17 labels"):
        check_labels({f"k{i}": "" for i in range(17)})
    with pytest.raises(LimitExceeded, match="'kkkk") as info:
        check_labels({"k" * 10_000: "v"})
    assert len(str(info.value)) < 200


def test_rate_limiter_refills_and_its_sender_table_is_bounded():
    limiter = SenderRateLimiter(rate=10, burst=2, max_senders=3)
    assert limiter.take("a", 1, now=0.0) is None and limiter.take("a", 1, now=0.0) is None
    assert limiter.take("a", 1, now=0.0) == 100, "one token at 10/s: 100 ms"
    assert limiter.take("a", 2, now=0.05) == 150, "a refused call takes nothing; 1.5 tokens short"
    assert limiter.take("a", 1, now=0.1) is None
    assert not limiter.fits(3) and limiter.fits(2)
    evicted = REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": "senders"}) or 0.0
    for sender in ("b", "c", "d", "e"):
        limiter.take(sender, 1, now=0.2)
    assert len(limiter) == 3, "the table stays within max_senders"
    assert REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": "senders"}) == evicted + 2
    off = SenderRateLimiter(rate=0)
    assert not off.enabled and off.take("a", 10_000) is None and off.fits(10_000)


def test_label_metrics_count_listed_keys_with_a_cap_on_values():
    metrics = LabelMetrics(["exp_unit_k"], max_values=2)
    for value in ("a", "b", "c", "d", "a"):
        metrics.count("acked", {"exp_unit_k": value, "exp_unit_other": value})

    def sample(value: str) -> float:
        labels = {"state": "acked", "label": "exp_unit_k", "value": value}
        return REGISTRY.get_sample_value("pushplat_labelled_events_total", labels) or 0.0

    assert (sample("a"), sample("b"), sample(OTHER_LABEL_VALUE), sample("c")) == (2.0, 1.0, 2.0, 0.0)
    labels = {"state": "acked", "label": "exp_unit_other", "value": "a"}
    assert REGISTRY.get_sample_value("pushplat_labelled_events_total", labels) is None
