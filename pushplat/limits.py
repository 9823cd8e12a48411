"""Limits on what clients may send, and the checks that enforce them.

Each bound has a name here (the README's "Limits" table lists them); a refusal raises
LimitExceeded, whose ``limit`` is the label counted in ``pushplat_limits_hit_total``. The
servicers turn it into INVALID_ARGUMENT for that one call. Messages never echo a hostile value
whole: they give its size, or a clipped prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

from pushplat.logs import clip
from pushplat.metrics import LIMITS_HIT

# User, device and message ids: what a registry key, a log line or a metric may hold.
MAX_ID_BYTES = 128
# Labels ride on every receipt and may be counted in metrics (see --metric-label-keys).
MAX_LABELS = 16
MAX_LABEL_KEY_BYTES = 64
MAX_LABEL_VALUE_BYTES = 256
# idempotency_key, collapse_key and content_type: short strings that end up in store keys.
MAX_KEY_BYTES = 256
# FCM's limit: one SendBatch is one event-loop turn of validation, so keep it short.
MAX_BATCH_REQUESTS = 500
# One Ack frame is handled in one go; 1,000 ids is a few milliseconds. SDKs split larger acks.
MAX_ACK_IDS = 1_000
# A device token (JWT) is a few hundred bytes; anything far larger is not one of ours.
MAX_TOKEN_BYTES = 8_192
# Acked ids a session may have waiting for the edge's ack processor; past it the edge stops
# reading that stream until they are processed (backpressure on the one client acking so fast).
MAX_ACK_BACKLOG = 2 * MAX_ACK_IDS
# What a Message may carry besides its payload, serialized, with every field at its limit: id,
# content_type, collapse_key, 16 labels, timestamps and tags (about 6 KiB), rounded up.
MAX_MESSAGE_OVERHEAD_BYTES = 8_192


def largest_frame_message(max_payload_bytes: int) -> int:
    """The frame bytes a message with the largest payload may need: what --max-frame-bytes must hold."""
    return max_payload_bytes + MAX_MESSAGE_OVERHEAD_BYTES


ID_RULE = f"ids must be 1-{MAX_ID_BYTES} bytes of printable text"


class LimitExceeded(ValueError):
    """Client input over a limit (or of a shape no id may have); the message says what to fix."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit

    def count(self) -> None:
        LIMITS_HIT.labels(self.limit).inc()


def check_id(what: str, value: str) -> None:
    """Raise LimitExceeded unless value is a usable id: non-empty, not only whitespace,
    at most MAX_ID_BYTES of UTF-8 and printable. ``what`` names the field in the message."""
    # The common case (short printable ASCII) costs three C-level calls.
    if value and len(value) <= MAX_ID_BYTES and value.isprintable() and not value.isspace():
        if value.isascii() or len(value.encode()) <= MAX_ID_BYTES:
            return
    if not value:
        raise LimitExceeded("id", f"{what} is empty; {ID_RULE}")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise LimitExceeded("id", f"{what} is {size} bytes; the limit is {MAX_ID_BYTES} bytes")
    if value.isspace():
        raise LimitExceeded("id", f"{what} is only whitespace; {ID_RULE}")
    offset, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
    raise LimitExceeded(
        "id", f"{what} contains a non-printable character (U+{ord(char):04X} at offset {offset}); {ID_RULE}"
    )


def check_labels(labels: Mapping[str, str]) -> None:
    if not labels:
        return
    if len(labels) > MAX_LABELS:
        raise LimitExceeded("labels", f"{len(labels)} labels; the limit is {MAX_LABELS}")
    for key, value in labels.items():
        if not key:
            raise LimitExceeded("labels", "a label key is empty")
        if len(key.encode()) > MAX_LABEL_KEY_BYTES:
            raise LimitExceeded(
                "labels",
                f"label key {clip(key)!r} is {len(key.encode())} bytes; the limit is {MAX_LABEL_KEY_BYTES} bytes",
            )
        if len(value) > MAX_LABEL_VALUE_BYTES // 4 and len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            raise LimitExceeded(
                "labels",
                f"label {clip(key)!r} has a value of {len(value.encode())} bytes; "
                f"the limit is {MAX_LABEL_VALUE_BYTES} bytes",
            )


def check_key(what: str, value: str) -> None:
    """idempotency_key, collapse_key, content_type: at most MAX_KEY_BYTES (empty is fine)."""
    if len(value) > MAX_KEY_BYTES // 4 and len(value.encode()) > MAX_KEY_BYTES:
        raise LimitExceeded("key_bytes", f"{what} is {len(value.encode())} bytes; the limit is {MAX_KEY_BYTES} bytes")
