import asyncio

from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.edge.session import OutboundQueue
from pushplat.messages import now_ms


def msg(i: int, priority: int, expires_at_ms: int = 0) -> message_pb2.Message:
    return message_pb2.Message(message_id=str(i), priority=priority, expires_at_ms=expires_at_ms)


async def test_control_then_high_then_normal_then_low():
    q = OutboundQueue(limit=100)
    q.push(msg(1, message_pb2.PRIORITY_LOW))
    q.push(msg(2, message_pb2.PRIORITY_NORMAL))
    q.push(msg(3, message_pb2.PRIORITY_HIGH))
    q.control(edge_pb2.ServerFrame(pong=edge_pb2.Pong()))
    frames = await q.next_frames()
    assert frames[0].HasField("pong")
    order = [frames[1].pushes.messages[0].message_id]
    while len(q):
        order += [m.message_id for f in await q.next_frames() for m in f.pushes.messages]
    assert order == ["3", "2", "1"]


async def test_full_queue_refuses_and_closed_queue_ends():
    q = OutboundQueue(limit=2)
    assert q.push(msg(1, 0)) and q.push(msg(2, 0))
    assert not q.push(msg(3, 0))
    q.close()
    assert not q.push(msg(4, 0))
    assert await q.next_frames() is None


async def test_expired_messages_are_never_pushed_and_are_counted():
    q = OutboundQueue(limit=10)
    q.push(msg(1, 0, expires_at_ms=now_ms() - 1))
    q.push(msg(2, 0))
    frames = await q.next_frames()
    assert [m.message_id for m in frames[0].pushes.messages] == ["2"]
    assert q.expired == 1


async def test_next_frames_waits_for_work():
    q = OutboundQueue(limit=10)
    waiter = asyncio.create_task(q.next_frames())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.push(msg(1, 0))
    frames = await asyncio.wait_for(waiter, 1)
    assert frames[0].pushes.messages[0].message_id == "1"


async def test_a_batch_of_large_payloads_stays_under_the_clients_receive_limit():
    """64 payloads of 64 KiB would make one 4 MiB+ frame that gRPC clients refuse by default."""
    q = OutboundQueue(limit=100)
    for i in range(64):
        q.push(message_pb2.Message(message_id=str(i), priority=message_pb2.PRIORITY_NORMAL, payload=b"x" * 65536))
    sizes, taken = [], []
    while len(q):
        [frame] = await q.next_frames()
        sizes.append(frame.ByteSize())
        taken += [m.message_id for m in frame.pushes.messages]
    assert taken == [str(i) for i in range(64)]
    assert max(sizes) < 4 * 1024 * 1024 and len(sizes) > 1
