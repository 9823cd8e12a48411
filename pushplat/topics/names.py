"""Topic names and the limits on topic requests: one rule for the api, the edge and the SDKs.

A name is 1-256 characters of ``[A-Za-z0-9_.~%-]`` (FCM's alphabet, with a tighter length: a
name lives in a store key per subscribed device and, when the operator allows it, in a metric
label). The check is a regular expression, so names never reach a store unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pushplat.limits import LimitExceeded
from pushplat.logs import clip

TOPIC_PATTERN = r"[A-Za-z0-9_.~%-]{1,256}"
MAX_TOPIC_BYTES = 256
# Topics per Subscribe/Unsubscribe (frame or call): one store script per device holds them all.
MAX_TOPICS_PER_REQUEST = 100
# Devices per Push.Subscribe/Unsubscribe, after each user is expanded to its devices (FCM: 1,000).
MAX_DEVICES_PER_REQUEST = 1_000
# A device's topics, default of --max-topics-per-device (FCM allows 2,000 per app instance).
DEFAULT_MAX_TOPICS_PER_DEVICE = 2_000

_NAME = re.compile(TOPIC_PATTERN)
NAME_RULE = f"topic names must match {TOPIC_PATTERN}"


def topic_error(name: str) -> str | None:
    """Why name is not a topic name, or None when it is one."""
    if _NAME.fullmatch(name):
        return None
    if not name:
        return f"a topic name is empty; {NAME_RULE}"
    if len(name) > MAX_TOPIC_BYTES:
        return f"topic name {clip(name)!r} is {len(name)} characters; the limit is {MAX_TOPIC_BYTES}"
    bad = next(c for c in name if not _NAME.fullmatch(c))
    return f"topic name {clip(name)!r} contains {bad!r} (U+{ord(bad):04X}); {NAME_RULE}"


def check_topic(name: str, what: str = "topic") -> None:
    """Raise LimitExceeded (counted as "topic_name") unless name is a topic name."""
    error = topic_error(name)
    if error is not None:
        raise LimitExceeded("topic_name", f"{what}: {error}")


def check_topic_count(topics: Sequence[str], where: str) -> None:
    """Raise LimitExceeded unless 1 <= len(topics) <= MAX_TOPICS_PER_REQUEST."""
    if not topics:
        raise LimitExceeded("topics_per_request", f"{where} names no topic; give 1-{MAX_TOPICS_PER_REQUEST}")
    if len(topics) > MAX_TOPICS_PER_REQUEST:
        raise LimitExceeded(
            "topics_per_request",
            f"{where} names {len(topics)} topics; the limit is {MAX_TOPICS_PER_REQUEST} per request "
            "(split it into several)",
        )
