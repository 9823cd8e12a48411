"""Every limit the code counts in pushplat_limits_hit_total{limit} is named in the README."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A label is given either to LIMITS_HIT.labels(...) or to LimitExceeded(...), possibly on the next line.
LABEL = re.compile(r'(?:LIMITS_HIT\.labels|LimitExceeded)\(\s*"([a-z_]+)"')


def counted_limits() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "pushplat").rglob("*.py"):
        found.update(LABEL.findall(path.read_text()))
    return found


def test_every_counted_limit_is_in_the_readme() -> None:
    labels = counted_limits()
    assert {"id", "send_rate", "session_control_frames"} <= labels, labels  # the scan finds them
    readme = (ROOT / "README.md").read_text()
    limits = readme[readme.index("### Limits") :]
    missing = sorted(label for label in labels if f"`{label}`" not in limits and f'limit="{label}"' not in limits)
    assert not missing, f"limits counted in pushplat_limits_hit_total but not in the README's Limits tables: {missing}"
