"""Inbox backends, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from pushplat.inbox.base import Collapsed, Inbox, InboxUnavailable
from pushplat.store_url import store_backend

__all__ = ["Collapsed", "Inbox", "InboxUnavailable", "open_inbox"]


def open_inbox(url: str, max_per_device: int = 10_000) -> Inbox:
    """max_per_device bounds each inbox (--inbox-limit); a Redis URL's ?inbox_max= wins over it."""
    if store_backend(url, "inbox") == "memory":
        from pushplat.inbox.memory import MemoryInbox

        return MemoryInbox(max_per_device)
    from pushplat.inbox.redis import RedisInbox

    return RedisInbox.from_url(url, max_per_device=max_per_device)
