"""A PushBatch written as its messages' encodings joined is byte for byte the protobuf's own."""

from hypothesis import given
from hypothesis import strategies as st
from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.edge.frames import push_batch, serialize, varint
from pushplat.edge.session import OutboundQueue, framed_size, wire_size

messages = st.builds(
    message_pb2.Message,
    message_id=st.text(max_size=40),
    payload=st.binary(max_size=70_000),
    priority=st.sampled_from([0, 1, 2, 3]),
    created_at_ms=st.integers(min_value=0, max_value=2**62),
    requires_ack=st.booleans(),
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    topic=st.text(max_size=20),
)


@given(st.lists(messages, max_size=5))
def test_push_batch_bytes_are_the_protobuf_serialization(batch):
    expected = edge_pb2.ServerFrame(pushes=edge_pb2.PushBatch(messages=batch))
    got = push_batch(m.SerializeToString() for m in batch)
    assert edge_pb2.ServerFrame.FromString(got) == expected
    assert got == expected.SerializeToString()


@given(messages)
def test_framed_size_of_an_encoding_is_wire_size(message):
    assert framed_size(len(message.SerializeToString())) == wire_size(message)


def test_varint_matches_protobuf_at_every_length_boundary():
    for value in (1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152):
        # A bytes field's encoding: its tag, its length as a varint, then the bytes.
        encoded = message_pb2.Message(payload=b"x" * value).SerializeToString()
        assert encoded[: 1 + len(varint(value))] == b"\x12" + varint(value)
    assert varint(0) == b"\x00" and varint(2**35) == b"\x80\x80\x80\x80\x80\x01"


def test_a_shared_encoding_goes_out_unchanged_and_a_frame_object_is_serialized():
    message = message_pb2.Message(message_id="m1", payload=b"hello", topic="news")
    encoded = message.SerializeToString()
    queue = OutboundQueue(limit=10)
    assert queue.push(message, framed_size(len(encoded)), encoded)
    queue.control(edge_pb2.ServerFrame(pong=edge_pb2.Pong()))
    frames, batch = queue.take()
    assert batch == [message]
    pong, pushed = (edge_pb2.ServerFrame.FromString(serialize(f)) for f in frames)
    assert pong.HasField("pong")
    assert list(pushed.pushes.messages) == [message]


def test_the_callers_encoding_is_what_goes_out_not_a_new_one():
    # A fan-out hands every session the same bytes; the queue must send those, not re-encode.
    message = message_pb2.Message(message_id="m1", payload=b"live")
    shared = message_pb2.Message(message_id="m1", payload=b"encoded once").SerializeToString()
    queue = OutboundQueue(limit=10)
    assert queue.push(message, framed_size(len(shared)), shared)
    [frame], _ = queue.take()
    assert edge_pb2.ServerFrame.FromString(frame).pushes.messages[0].payload == b"encoded once"
