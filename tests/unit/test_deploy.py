"""The deploy/ examples agree with the README's sizing and with each other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def env_value(manifest: str, name: str) -> str:
    match = re.search(rf"- name: {name}\b.*\n\s+value: \"([^\"]+)\"", manifest)
    assert match, f"{name} is not set in the manifest"
    return match.group(1)


def test_the_kubernetes_edge_connection_cap_fits_its_memory_limit():
    """The cap times the README's measured memory per connection stays within 3/4 of the pod's limit,
    and the autoscaler's target per edge is below the cap (scale out before refusing devices)."""
    edge = (KUBE / "edge.yaml").read_text()
    amount, unit = re.search(r"limits: \{memory: (\d+)(Ki|Mi|Gi)\}", edge).groups()
    limit = int(amount) * UNITS[unit]
    per_connection = float(re.search(r"about \*\*(\d+) KiB\*\*", (ROOT / "README.md").read_text()).group(1)) * 1024
    cap = int(env_value(edge, "PUSHPLAT_MAX_CONNECTIONS"))
    assert 0 < cap * per_connection <= 0.75 * limit, (cap, per_connection, limit)
    assert cap * per_connection >= 0.5 * limit, "the cap wastes most of the memory limit"
    target = int(re.search(r'averageValue: "(\d+)"', (KUBE / "hpa-edge.yaml").read_text()).group(1))
    assert target < cap
