"""Inbox backends, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from pushplat.inbox.base import Collapsed, Inbox, InboxUnavailable
from pushplat.store_url import store_backend

__all__ = ["Collapsed", "Inbox", "InboxUnavailable", "open_inbox"]


def open_inbox(url: str) -> Inbox:
    if store_backend(url, "inbox") == "memory":
        from pushplat.inbox.memory import MemoryInbox

        return MemoryInbox()
    from pushplat.inbox.redis import RedisInbox

    return RedisInbox.from_url(url)
