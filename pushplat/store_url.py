"""Which backend a store URL names. The registry, inbox and idempotency store share one URL."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

REDIS_SCHEMES = ("redis", "rediss", "redis+cluster")


def store_backend(url: str, what: str) -> Literal["memory", "redis"]:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return "memory"
    if scheme in REDIS_SCHEMES:
        return "redis"
    raise ValueError(
        f"unsupported {what} URL {url!r}: use memory://, redis://host:port/db or redis+cluster://host:port"
    )
