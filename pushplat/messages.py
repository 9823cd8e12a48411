"""Message ids, clocks and priority lanes: small helpers every role shares."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

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


_RANDOM_IDS_PER_READ = 256
_random: Iterator[int] = iter(())


def _random_80_bits() -> int:
    """80 bits from the OS's CSPRNG. os.urandom is a system call of several µs here, so it is
    read for 256 ids at a time."""
    global _random
    value = next(_random, None)
    if value is None:
        block = os.urandom(10 * _RANDOM_IDS_PER_READ)
        _random = (int.from_bytes(block[i : i + 10], "big") for i in range(0, len(block), 10))
        value = next(_random)
    return value


def new_message_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by send time and index well in stores. Formatted
    directly (no uuid.UUID object): this runs once per message."""
    ms = time.time_ns() // 1_000_000
    rand = _random_80_bits()
    # 48 bits of ms, version 7, 12 random bits, variant 0b10, 62 random bits.
    return (
        f"{ms >> 16 & 0xFFFFFFFF:08x}-{ms & 0xFFFF:04x}-{0x7000 | rand >> 68 & 0xFFF:04x}-"
        f"{0x8000 | rand >> 48 & 0x3FFF:04x}-{rand & 0xFFFFFFFFFFFF:012x}"
    )


def new_session_id() -> str:
    return os.urandom(16).hex()  # as random as uuid4().hex, without the UUID object


def is_expired(message: message_pb2.Message, at_ms: int | None = None) -> bool:
    return message.expires_at_ms != 0 and message.expires_at_ms <= (at_ms or now_ms())
