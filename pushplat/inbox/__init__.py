"""Inbox backends, chosen by the registry URL: memory:// or redis://… / redis+cluster://…."""

from __future__ import annotations

from urllib.parse import urlparse

from pushplat.inbox.base import Inbox, InboxUnavailable

__all__ = ["Inbox", "InboxUnavailable", "open_inbox"]


def open_inbox(url: str) -> Inbox:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from pushplat.inbox.memory import MemoryInbox

        return MemoryInbox()
    if scheme in ("redis", "rediss", "redis+cluster"):
        from pushplat.inbox.redis import RedisInbox

        return RedisInbox.from_url(url)
    raise ValueError(f"unsupported inbox URL {url!r}")
