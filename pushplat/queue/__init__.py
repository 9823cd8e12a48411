"""Priority lane backends, chosen by URL: memory:// or kafka://host:port[,host:port]."""

from __future__ import annotations

from urllib.parse import urlparse

from pushplat.queue.base import LaneConsumer, LaneProducer, QueueUnavailable, Record, target_key

__all__ = ["LaneConsumer", "LaneProducer", "QueueUnavailable", "Record", "check_queue_url", "target_key"]


def check_queue_url(url: str) -> str:
    """The backend name for a lane URL, or a ValueError that says what is accepted."""
    scheme = urlparse(url).scheme
    if scheme in ("memory", "kafka"):
        return scheme
    raise ValueError(f"unsupported queue URL {url!r}: use memory:// or kafka://host:port[,host:port]")
