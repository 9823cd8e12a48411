"""Building a SendRequest from keyword arguments: shared by PushSender and SendStream."""

from __future__ import annotations

from collections.abc import Mapping

from .priority import parse_priority
from .v1 import message_pb2, push_pb2

__all__ = ["make_request"]


def make_request(
    *,
    user_id: str | None = None,
    device_id: str | None = None,
    topic: str | None = None,
    payload: bytes | str = b"",
    content_type: str = "",
    priority: str | int = "normal",
    ttl_seconds: int = 0,
    collapse_key: str = "",
    idempotency_key: str = "",
    at_least_once: bool = False,
    labels: Mapping[str, str] | None = None,
) -> push_pb2.SendRequest:
    """Build a SendRequest from keyword arguments, checking what the server would reject."""
    # The target is a oneof: setting both would silently keep only the last one.
    if sum(map(bool, (user_id, device_id, topic))) != 1:
        raise ValueError("give exactly one of user_id, device_id or topic")
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    elif not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")
    request = push_pb2.SendRequest(
        payload=bytes(payload),
        content_type=content_type,
        priority=parse_priority(priority),
        ttl_seconds=ttl_seconds,
        collapse_key=collapse_key,
        idempotency_key=idempotency_key,
        delivery=message_pb2.AT_LEAST_ONCE if at_least_once else message_pb2.AT_MOST_ONCE,
        labels=dict(labels or {}),
    )
    if user_id:
        request.user_id = user_id
    elif topic:
        request.topic = topic
    else:
        request.device_id = device_id or ""
    return request
