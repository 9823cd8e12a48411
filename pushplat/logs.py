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


# No field of a log line is longer than this, whatever a client sent.
MAX_FIELD_CHARS = 1024


def _quote(value: Any) -> str:
    text = clip(value, MAX_FIELD_CHARS)
    if not text.isprintable():
        # A newline in a client-chosen value must not forge a second log line.
        text = text.encode("unicode_escape").decode("ascii")
    if text == "" or any(c in text for c in ' ="'):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def clip(value: Any, limit: int = 64) -> str:
    """Text for a log line or an error message: a hostile 1 MB id must not be written whole."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text.encode('utf-8', 'surrogatepass'))} bytes)"


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
