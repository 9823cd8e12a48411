"""Bounded waits that a cancel always ends."""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; True if it was set.

    asyncio.wait_for on Python 3.11 swallows a cancel that arrives just as the event is set
    (cpython gh-86296), so a background loop waiting on it could outlive its own stop().
    asyncio.timeout() lets the cancel through."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True
