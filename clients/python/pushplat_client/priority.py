"""Priority helpers: accept "high"/"normal"/"low" (or the enum) wherever a priority is asked for."""

from __future__ import annotations

from .v1 import message_pb2

__all__ = [
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "PRIORITY_UNSPECIFIED",
    "Priority",
    "parse_priority",
    "priority_name",
]

# The generated enum wrapper: Priority.Name(3) == "PRIORITY_HIGH", Priority.Value(...).
Priority = message_pb2.Priority
PRIORITY_UNSPECIFIED: int = message_pb2.PRIORITY_UNSPECIFIED
PRIORITY_LOW: int = message_pb2.PRIORITY_LOW
PRIORITY_NORMAL: int = message_pb2.PRIORITY_NORMAL
PRIORITY_HIGH: int = message_pb2.PRIORITY_HIGH

_BY_NAME: dict[str, int] = {
    "low": PRIORITY_LOW,
    "normal": PRIORITY_NORMAL,
    "high": PRIORITY_HIGH,
    "unspecified": PRIORITY_UNSPECIFIED,
}
_NAMES: dict[int, str] = {
    PRIORITY_LOW: "low",
    PRIORITY_NORMAL: "normal",
    PRIORITY_HIGH: "high",
    # The contract says unspecified means normal.
    PRIORITY_UNSPECIFIED: "normal",
}


def parse_priority(value: str | int) -> int:
    """``"high"``, ``"PRIORITY_HIGH"`` or ``3`` -> ``3``; raises ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid priority {value!r}")
    if isinstance(value, int):
        if value not in _NAMES:
            raise ValueError(f"invalid priority {value!r}; expected one of {sorted(_NAMES)}")
        return value
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("priority_")
        if key in _BY_NAME:
            return _BY_NAME[key]
    raise ValueError(f"invalid priority {value!r}; expected 'high', 'normal' or 'low'")


def priority_name(value: int) -> str:
    """``3`` -> ``"high"``; unspecified reads as ``"normal"``; unknown values as ``"unknown(N)"``."""
    return _NAMES.get(value, f"unknown({value})")
