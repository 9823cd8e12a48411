from pushplat_client.v1 import message_pb2

from pushplat.queue import Record
from pushplat.router.scheduler import LaneScheduler
from pushplat.v1 import delivery_pb2


def records(lane: str, n: int) -> list[Record]:
    return [
        Record(
            lane, delivery_pb2.Envelope(device_id=f"{lane}-{i}", message=message_pb2.Message(message_id=f"{lane}-{i}"))
        )
        for i in range(n)
    ]


def ids(batch: list[Record]) -> list[str]:
    return [r.envelope.message.message_id for r in batch]


def test_high_goes_first_and_each_lane_keeps_its_order():
    s = LaneScheduler()
    s.add(records("low", 1000) + records("normal", 10) + records("high", 3))
    batch = ids(s.take(64))
    assert batch[:3] == ["high-0", "high-1", "high-2"]
    assert batch[3:13] == [f"normal-{i}" for i in range(10)]
    assert batch[13:] == [f"low-{i}" for i in range(51)]


def test_low_is_never_starved_by_a_high_flood():
    s = LaneScheduler()
    s.add(records("high", 10_000) + records("low", 100))
    lows_served = 0
    for _ in range(10):
        lows_served += sum(1 for r in s.take(90) if r.lane == "low")
    assert lows_served >= 10 * (90 // 9)  # low's weighted share: 1 of 9 with high at 8


def test_unused_share_goes_to_the_lanes_that_have_work():
    s = LaneScheduler()
    s.add(records("low", 500))
    assert len(s.take(256)) == 256


def test_hungry_lanes_stop_fetching_when_buffers_are_full():
    s = LaneScheduler(buffer_limit=100)
    s.add(records("low", 60))
    assert s.hungry_lanes() == ["high", "normal"]
