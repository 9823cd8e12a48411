"""Structured logs: one line per event, `event=name key=value ...`, with ids."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def kv(event: str, **fields: Any) -> str:
    """Render one event as `event=name k=v ...` so logs grep and parse cleanly."""
    parts = [f"event={event}"]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items() if value is not None)
    return " ".join(parts)


class LogLimiter:
    """At most one line per key per interval, for events a hostile caller can trigger at will;
    allow() also says how many lines it held back since the last one it let through."""

    def __init__(self, interval_seconds: float, max_keys: int = 1024) -> None:
        self.interval = interval_seconds
        self.max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> tuple[bool, int]:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (float("-inf"), 0))
        if now - last >= self.interval:
            if len(self._last) >= self.max_keys:
                self._last.clear()  # bounded: forgetting only lets a line through early
            self._last[key] = (now, 0)
            return True, suppressed
        self._last[key] = (last, suppressed + 1)
        return False, suppressed + 1
