"""Message ids, clocks and priority lanes: small helpers every role shares."""

from __future__ import annotations

import os
import time
import uuid

from pushplat_client.v1 import message_pb2

Priority = message_pb2.Priority

# Lanes in the order a router serves them.
LANES: tuple[str, ...] = ("high", "normal", "low")

_LANE_OF_PRIORITY = {
    message_pb2.PRIORITY_HIGH: "high",
    message_pb2.PRIORITY_NORMAL: "normal",
    message_pb2.PRIORITY_UNSPECIFIED: "normal",
    message_pb2.PRIORITY_LOW: "low",
}
_PRIORITY_OF_NAME = {
    "high": message_pb2.PRIORITY_HIGH,
    "normal": message_pb2.PRIORITY_NORMAL,
    "low": message_pb2.PRIORITY_LOW,
}


def lane_of(priority: int) -> str:
    """The lane for a priority; unspecified means normal."""
    return _LANE_OF_PRIORITY[priority]


def priority_of(name: str) -> int:
    return _PRIORITY_OF_NAME[name.lower()]


def priority_name(priority: int) -> str:
    return lane_of(priority) if priority in _LANE_OF_PRIORITY else "normal"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_message_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by send time and index well in stores."""
    ms = now_ms()
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & 0x3FFFFFFFFFFFFFFF
    return str(uuid.UUID(int=value))


def new_session_id() -> str:
    return uuid.uuid4().hex


def is_expired(message: message_pb2.Message, at_ms: int | None = None) -> bool:
    return message.expires_at_ms != 0 and message.expires_at_ms <= (at_ms or now_ms())
