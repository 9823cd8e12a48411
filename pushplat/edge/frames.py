"""ServerFrames as bytes: a PushBatch is written by joining its messages' encodings.

Building a PushBatch message copies every message into it and serializes the copy. A topic
fan-out writes the same message to thousands of sessions, so the edge encodes it once and each
session's frame is that encoding with a few bytes of framing around it (the protobuf wire format
of ``ServerFrame{pushes: PushBatch{messages: [...]}}``, field by field). A frame on the way to a
stream is therefore either a ServerFrame or those bytes; ``serialize`` takes both.
"""

from __future__ import annotations

from collections.abc import Iterable

from pushplat_client.v1 import edge_pb2

OutFrame = edge_pb2.ServerFrame | bytes

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(descriptor_field: object) -> bytes:
    return varint((descriptor_field.number << 3) | _LENGTH_DELIMITED)  # type: ignore[attr-defined]


_PUSHES_TAG = _tag(edge_pb2.ServerFrame.DESCRIPTOR.fields_by_name["pushes"])
_MESSAGE_TAG = _tag(edge_pb2.PushBatch.DESCRIPTOR.fields_by_name["messages"])


def push_batch(encodings: Iterable[bytes]) -> bytes:
    """The bytes of ServerFrame(pushes=PushBatch(messages=...)) from each message's encoding."""
    parts: list[bytes] = [_PUSHES_TAG, b""]  # the batch's length goes in parts[1]
    length = 0
    for encoded in encodings:
        size = varint(len(encoded))
        parts += (_MESSAGE_TAG, size, encoded)
        length += len(_MESSAGE_TAG) + len(size) + len(encoded)
    parts[1] = varint(length)
    return b"".join(parts)  # one copy of up to a frame's bytes, not two


def serialize(frame: OutFrame) -> bytes:
    """The gRPC response serializer of Edge.Connect, and the WebSocket payload."""
    return frame if isinstance(frame, bytes) else frame.SerializeToString()
