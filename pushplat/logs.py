"""Structured logs: one line per event, `event=name key=value ...`, with ids."""

from __future__ import annotations

import logging
import sys
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
