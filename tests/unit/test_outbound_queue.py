from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.edge.session import (
    FRAME_OVERHEAD,
    MAX_CONTROL_FRAMES,
    MESSAGE_OVERHEAD,
    InFlight,
    OutboundQueue,
    wire_size,
)
from pushplat.messages import now_ms
from pushplat.metrics import LIMITS_HIT


def msg(i: int, priority: int = 0, expires_at_ms: int = 0, payload: bytes = b"", **fields) -> message_pb2.Message:
    return message_pb2.Message(
        message_id=str(i), priority=priority, expires_at_ms=expires_at_ms, payload=payload, **fields
    )


def drain(q: OutboundQueue) -> tuple[list[edge_pb2.ServerFrame], list[str]]:
    frames, ids = [], []
    while (taken := q.take()) is not None and taken[0]:
        # A PushBatch goes out as bytes (edge/frames.py): parsed here to look inside.
        frames += [edge_pb2.ServerFrame.FromString(f) if isinstance(f, bytes) else f for f in taken[0]]
        ids += [m.message_id for m in taken[1]]
    return frames, ids


def test_control_then_high_then_normal_then_low():
    q = OutboundQueue(limit=100)
    q.push(msg(1, message_pb2.PRIORITY_LOW))
    q.push(msg(2, message_pb2.PRIORITY_NORMAL))
    q.push(msg(3, message_pb2.PRIORITY_HIGH))
    q.control(edge_pb2.ServerFrame(pong=edge_pb2.Pong()))
    frames, batch = q.take()
    pushed = edge_pb2.ServerFrame.FromString(frames[-1])  # a PushBatch goes out as bytes
    assert frames[0].HasField("pong") and pushed.pushes.messages[0].message_id == "3"
    assert [m.message_id for m in batch] == ["3"]
    assert drain(q)[1] == ["2", "1"]


def test_full_queue_refuses_and_closed_queue_ends():
    q = OutboundQueue(limit=2)
    assert q.push(msg(1)) and q.push(msg(2))
    assert not q.push(msg(3))
    assert q.full_since is not None
    q.close()
    assert not q.push(msg(4))
    assert q.take() is None


def test_expired_messages_are_never_pushed_and_are_counted():
    q = OutboundQueue(limit=10)
    q.push(msg(1, expires_at_ms=now_ms() - 1))
    q.push(msg(2))
    frames, batch = q.take()
    assert [m.message_id for m in batch] == ["2"] and len(frames) == 1
    assert q.expired == 1


def test_nothing_to_write_is_empty_and_a_push_calls_on_ready():
    q = OutboundQueue(limit=10)
    woken = []
    q.on_ready = lambda: woken.append(True)
    assert q.take() == ([], [])
    q.push(msg(1))
    assert woken == [True]
    assert [m.message_id for m in q.take()[1]] == ["1"]


def test_the_welcome_goes_ahead_of_control_frames_queued_before_it():
    q = OutboundQueue(limit=10)
    q.control(edge_pb2.ServerFrame(go_away=edge_pb2.GoAway(reason=edge_pb2.GoAway.REPLACED)))
    q.welcome(edge_pb2.ServerFrame(welcome=edge_pb2.Welcome(session_id="s")))
    frames, _ = q.take()
    assert [f.WhichOneof("frame") for f in frames] == ["welcome", "go_away"]


def test_a_batch_of_large_payloads_is_split_into_frames_within_the_byte_cap():
    """64 payloads of 64 KiB would make one 4 MiB+ frame that gRPC clients refuse by default."""
    cap = 1024 * 1024
    q = OutboundQueue(limit=100, limit_bytes=64 * 1024 * 1024, frame_bytes=cap)
    for i in range(64):
        assert q.push(msg(i, message_pb2.PRIORITY_NORMAL, payload=b"x" * 65536))
    frames, ids = drain(q)
    assert ids == [str(i) for i in range(64)]
    sizes = [f.ByteSize() for f in frames]
    assert max(sizes) <= cap and len(frames) == 5, sizes  # 15 messages of 64 KiB + framing per MiB
    # As full as the cap allows: one more message would not have fitted.
    one = wire_size(msg(0, payload=b"x" * 65536))
    assert all(size + one > cap - FRAME_OVERHEAD for size in sizes[:-1])


def test_wire_size_is_the_bytes_a_message_takes_in_a_push_batch():
    for payload in (b"", b"x" * 100, b"x" * 20_000, b"x" * 3_000_000):
        message = msg(7, payload=payload, labels={"k": "v"})
        frame = edge_pb2.ServerFrame(pushes=edge_pb2.PushBatch(messages=[message, message]))
        assert frame.ByteSize() <= 2 * wire_size(message) + FRAME_OVERHEAD
        assert frame.pushes.ByteSize() == 2 * wire_size(message)


def test_the_queue_is_bounded_in_bytes_as_well_as_messages():
    size = wire_size(msg(0, payload=b"x" * 60_000)) + MESSAGE_OVERHEAD
    q = OutboundQueue(limit=10_000, limit_bytes=10 * size)
    accepted = [q.push(msg(i, payload=b"x" * 60_000)) for i in range(12)]
    assert accepted == [True] * 10 + [False] * 2
    assert q.bytes == 10 * size and q.full_since is not None
    # Draining to half the budget clears the slow-consumer clock.
    q.take()
    assert q.full_since is None and q.bytes <= q.limit_bytes // 2


def test_an_empty_queue_takes_one_message_larger_than_its_budget():
    q = OutboundQueue(limit=10, limit_bytes=1000)
    assert q.push(msg(1, payload=b"x" * 5000))
    assert not q.push(msg(2))


def test_a_replay_takes_the_oldest_that_fit_and_reports_the_rest():
    size = wire_size(msg(0, payload=b"x" * 1000)) + MESSAGE_OVERHEAD
    q = OutboundQueue(limit=100, limit_bytes=3 * size)
    q.hold()
    assert q.take() == ([], [])  # held: nothing goes out until the replay is loaded
    left = q.release([msg(i, payload=b"x" * 1000) for i in range(5)])
    assert left == 2
    assert drain(q)[1] == ["0", "1", "2"]
    assert q.catch_up([msg(i, payload=b"x" * 1000) for i in (3, 4)]) == 0
    assert drain(q)[1] == ["3", "4"]


def test_a_replayed_message_also_pushed_live_goes_out_once():
    q = OutboundQueue(limit=100)
    q.hold()
    q.push(msg(1))
    q.push(msg(2))
    q.release([msg(1), msg(0)])
    assert drain(q)[1] == ["1", "0", "2"]
    assert len(q) == 0 and q.bytes == 0


def test_in_flight_is_bounded_in_bytes_and_forgets_the_oldest():
    flight = InFlight(limit_bytes=10_000)
    flight.add([msg(i, requires_ack=bool(i % 2)) for i in range(200)])
    assert flight.bytes <= 10_000 and flight.evicted > 0
    assert "0" not in flight and "199" in flight
    assert flight.pop("199") == (True, None) and flight.pop("199") is None
    labelled = msg(500, labels={"variant": "B"})
    flight.add([labelled])
    assert flight.pop("500") == (False, {"variant": "B"})


def test_control_frames_are_capped_for_a_device_that_pings_without_reading():
    q = OutboundQueue(limit=10)
    pong = edge_pb2.ServerFrame(pong=edge_pb2.Pong())
    hits = LIMITS_HIT.labels("session_control_frames")
    before = hits._value.get()
    accepted = [q.control(pong) for _ in range(MAX_CONTROL_FRAMES + 500)]
    assert accepted.count(True) == MAX_CONTROL_FRAMES
    assert hits._value.get() - before == 500
    frames, _ = q.take()
    assert len(frames) == MAX_CONTROL_FRAMES
    # Once written, there is room again.
    assert q.control(pong)


async def test_control_room_is_awaitable_until_the_writer_takes_the_frames_or_the_queue_closes():
    pong = edge_pb2.ServerFrame(pong=edge_pb2.Pong())
    for end in ("take", "close"):
        q = OutboundQueue(limit=10)
        for _ in range(MAX_CONTROL_FRAMES - 1):
            q.control(pong)
        assert q.control_room() is None  # one more fits
        q.control(pong)
        room = q.control_room()
        assert room is not None and not room.done()
        assert q.control_room() is room  # one future for every waiter
        q.take() if end == "take" else q.close()
        assert room.done()
        assert q.control_room() is None
