"""Inbox backends, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from pushplat.inbox.base import Collapsed, Inbox, InboxUnavailable
from pushplat.store_url import store_backend

__all__ = ["Collapsed", "Inbox", "InboxUnavailable", "open_inbox"]


def open_inbox(
    url: str,
    max_per_device: int = 10_000,
    wait_replicas: int = 0,
    wait_timeout_ms: int = 100,
    memory_bounds: tuple[int, int] | None = None,
) -> Inbox:
    """max_per_device bounds each inbox (--inbox-limit); a Redis URL's ?inbox_max= wins over it.
    On Redis, wait_replicas > 0 makes every write wait for that many replicas (--inbox-wait-replicas).
    memory_bounds: (bytes, devices) of an in-memory inbox (--memory-inbox-bytes/-devices)."""
    if store_backend(url, "inbox") == "memory":
        from pushplat.inbox.memory import MemoryInbox

        if memory_bounds is None:
            return MemoryInbox(max_per_device)
        return MemoryInbox(max_per_device, max_devices=memory_bounds[1], max_bytes=memory_bounds[0])
    from pushplat.inbox.redis import RedisInbox

    return RedisInbox.from_url(
        url, max_per_device=max_per_device, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms
    )
