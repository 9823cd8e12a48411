"""Topics end to end on the embedded platform (memory stores, and Redis / Redis Cluster as the
registry): device-side and backend-side subscriptions, Send to a topic, limits and errors."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from prometheus_client import REGISTRY
from pushplat_client import PushClient, PushError, PushSender
from pushplat_client.v1 import edge_pb2, message_pb2, push_pb2

from tests.helpers import Inbox, eventually

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


async def _clients(platform, names: list[str], inbox: Inbox) -> dict[str, PushClient]:
    clients = {}
    for name in names:
        client = PushClient(addr(platform.ports.edge), user_id=f"user-{name}", device_id=name)
        await inbox.connect(name, client, timeout=10)
        clients[name] = client
    return clients


async def test_a_topic_send_reaches_its_subscribers_and_nobody_else(start_platform, registry_url):
    platform = await start_platform(registry=registry_url)
    inbox = Inbox(keep=lambda m: (m.payload.decode(), m.topic))
    clients = await _clients(platform, ["a", "b", "c"], inbox)
    try:
        for name in ("a", "b"):
            result = await clients[name].subscribe("news", "sport")
            assert list(result.applied) == ["news", "sport"] and not result.refused
            assert result.topic_count == 2
        async with PushSender(addr(platform.ports.api)) as sender:
            sent = await sender.send(topic="news", payload="headline", priority="high", labels={"k": "v"})
            assert sent.message_id
            await eventually(lambda: inbox.seen["a"] and inbox.seen["b"], what="both subscribers' copies")
            # A direct send to c is the next thing c sees: it never got the topic message.
            await sender.send(device_id="c", payload="direct")
            await eventually(lambda: inbox.seen["c"], what="c's direct message")
            assert inbox.seen["c"] == [("direct", "")]
            assert inbox.seen["a"] == inbox.seen["b"] == [("headline", "news")]
            listed = await sender.get_subscriptions("a")
            assert list(listed.topics) == ["news", "sport"]
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()


async def test_an_unsubscribed_device_gets_nothing(start_platform):
    platform = await start_platform()
    inbox = Inbox()
    clients = await _clients(platform, ["a", "b"], inbox)
    try:
        for client in clients.values():
            await client.subscribe("t")
        result = await clients["a"].unsubscribe("t")
        assert list(result.applied) == ["t"] and result.topic_count == 0
        async with PushSender(addr(platform.ports.api)) as sender:
            await sender.send(topic="t", payload="one")
            await eventually(lambda: inbox.seen["b"], what="b's copy")
            await sender.send(device_id="a", payload="marker")
            await eventually(lambda: inbox.seen["a"], what="a's marker")
        assert inbox.seen["a"] == ["marker"]
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()


async def test_backend_subscribe_by_user_and_by_device_reaches_connected_devices_at_once(start_platform, registry_url):
    platform = await start_platform(registry=registry_url)
    inbox = Inbox()
    phone = PushClient(addr(platform.ports.edge), user_id="sam", device_id="sam-phone")
    laptop = PushClient(addr(platform.ports.edge), user_id="sam", device_id="sam-laptop")
    other = PushClient(addr(platform.ports.edge), user_id="kim", device_id="kim-1")
    try:
        for name, client in (("phone", phone), ("laptop", laptop), ("other", other)):
            await inbox.connect(name, client, timeout=10)
        async with PushSender(addr(platform.ports.api)) as sender:
            reply = await sender.subscribe(["scores"], user_ids=["sam", "nobody"], device_ids=["kim-1"])
            by_device = {r.device_id: r for r in reply.results}
            assert set(by_device) == {"sam-phone", "sam-laptop", "kim-1"}
            assert by_device["sam-phone"].user_id == "sam" and list(by_device["sam-phone"].applied) == ["scores"]
            assert list(reply.users_without_devices) == ["nobody"]
            # The change travels as a control record: wait until each edge index has it.
            await eventually(
                lambda: all(
                    "scores" in platform.edge.topics.topics_of(platform.edge.hub.get(d))
                    for d in ("sam-phone", "sam-laptop", "kim-1")
                ),
                what="the subscriptions in the edge's index",
            )
            await sender.send(topic="scores", payload="1-0")
            await eventually(lambda: all(inbox.seen[n] for n in ("phone", "laptop", "other")), what="3 copies")
            await sender.unsubscribe(["scores"], device_ids=["kim-1"])
            await eventually(
                lambda: not platform.edge.topics.topics_of(platform.edge.hub.get("kim-1")), what="kim unsubscribed"
            )
            await sender.send(topic="scores", payload="2-0")
            await eventually(lambda: len(inbox.seen["phone"]) == 2 and len(inbox.seen["laptop"]) == 2, what="2nd")
            await sender.send(device_id="kim-1", payload="marker")
            await eventually(lambda: len(inbox.seen["other"]) == 2, what="kim's marker")
            assert inbox.seen["other"] == ["1-0", "marker"]
            assert list((await sender.get_subscriptions("sam-phone")).topics) == ["scores"]
            assert list((await sender.get_subscriptions("kim-1")).topics) == []
    finally:
        await inbox.close()
        for client in (phone, laptop, other):
            await client.close()


async def test_subscriptions_outlive_the_connection(start_platform, registry_url):
    platform = await start_platform(registry=registry_url)
    inbox = Inbox()
    first = PushClient(addr(platform.ports.edge), user_id="u", device_id="d")
    await inbox.connect("first", first, timeout=10)
    await first.subscribe("alerts")
    await first.close()
    await inbox.close()
    inbox = Inbox()
    second = PushClient(addr(platform.ports.edge), user_id="u", device_id="d")
    try:
        await inbox.connect("second", second, timeout=10)
        # No subscribe on this connection: the edge restored the device's topics from the store.
        await eventually(
            lambda: "alerts" in platform.edge.topics.topics_of(platform.edge.hub.get("d")), what="restored topics"
        )
        async with PushSender(addr(platform.ports.api)) as sender:
            await sender.send(topic="alerts", payload="again")
        await eventually(lambda: inbox.seen["second"] == ["again"], what="the topic message after a reconnect")
    finally:
        await inbox.close()
        await second.close()


async def test_bad_topics_are_refused_one_by_one_and_the_stream_carries_on(start_platform, clients):
    platform = await start_platform(max_topics_per_device=3)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    frame = edge_pb2.ClientFrame(
        subscribe=edge_pb2.Subscribe(
            topics=["ok-1", "bad name", "", "x" * 300, "y" * 100 + " z", "ok-2", "ok-3", "ok-4"], request_id="r1"
        )
    )
    await device.call.write(frame)
    answer = await asyncio.wait_for(device.call.read(), 10)
    result = answer.subscription
    assert result.request_id == "r1"
    assert list(result.applied) == ["ok-1", "ok-2", "ok-3"]
    refused = {r.topic[:20]: (r.code, r.message) for r in result.refused}
    assert refused["bad name"][0] == INVALID and "[A-Za-z0-9_.~%-]" in refused["bad name"][1]
    assert refused[""][0] == INVALID and "empty" in refused[""][1]
    assert refused["x" * 20][0] == INVALID and "256" in refused["x" * 20][1]
    assert refused["ok-4"][0] == EXHAUSTED and "--max-topics-per-device" in refused["ok-4"][1]
    # A refused name within the length limit comes back exactly as sent, so it can be matched.
    assert "y" * 100 + " z" in [r.topic for r in result.refused]
    assert result.topic_count == 3
    # The stream still works: a topic message arrives.
    api = clients("api", addr(platform.ports.api))
    sent = await api.send(topic="ok-2", payload=b"still here")
    [message] = await device.read_messages(1)
    assert message.message_id == sent.message_id and message.topic == "ok-2"


async def test_too_many_topics_in_one_frame_ends_that_stream_only(start_platform, clients):
    platform = await start_platform()
    bystander = clients("device", addr(platform.ports.edge))
    await bystander.hello(user_id="b", device_id="bystander")
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    await device.call.write(edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=[f"t{i}" for i in range(101)])))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async with asyncio.timeout(10):
            while True:
                await device.call.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "101 topics" in err.value.details() and "100 per frame" in err.value.details()
    api = clients("api", addr(platform.ports.api))
    sent = await api.send(device_id="bystander", payload=b"fine")
    [message] = await bystander.read_messages(1)
    assert message.message_id == sent.message_id


async def test_subscription_floods_are_rate_limited_per_device(start_platform, clients):
    platform = await start_platform(topic_changes_per_second=2.0)
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    codes = []
    for i in range(10):
        await device.call.write(edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=[f"t{i}"], request_id=str(i))))
        answer = await asyncio.wait_for(device.call.read(), 10)
        codes.append([r.code for r in answer.subscription.refused])
    # A burst of twice the rate is applied, then each change is refused with RESOURCE_EXHAUSTED.
    assert codes[:4] == [[]] * 4
    assert all(c == [EXHAUSTED] for c in codes[5:])


async def test_send_to_a_topic_is_validated(platform, clients):
    api = clients("api", addr(platform.ports.api))
    for fields, words in (
        ({"topic": "bad topic"}, "[A-Za-z0-9_.~%-]"),
        ({"topic": "t", "delivery": message_pb2.AT_LEAST_ONCE}, "at-most-once"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.send(payload=b"x", **fields)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in err.value.details()


async def test_backend_subscribe_limits(start_platform):
    platform = await start_platform(max_topics_per_device=150)
    async with PushSender(addr(platform.ports.api)) as sender:
        cases = [
            (dict(topics=["t"]), "device_ids or user_ids"),
            (dict(topics=[], device_ids=["d"]), "no topic"),
            (dict(topics=[f"t{i}" for i in range(101)], device_ids=["d"]), "limit is 100"),
            (dict(topics=["t"], device_ids=[f"d{i}" for i in range(1001)]), "limit is 1000"),
            (dict(topics=["no spaces"], device_ids=["d"]), "topics[0]"),
        ]
        for fields, words in cases:
            topics = fields.pop("topics")
            with pytest.raises(PushError) as err:
                await sender.subscribe(topics, **fields)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, fields
            assert words in err.value.details, (fields, err.value.details)
        # The per-device cap: applied up to it, the rest refused per topic with RESOURCE_EXHAUSTED.
        reply = await sender.subscribe([f"t{i}" for i in range(100)], device_ids=["full"])
        assert len(reply.results[0].applied) == 100
        reply = await sender.subscribe([f"u{i}" for i in range(100)], device_ids=["full"])
        [result] = reply.results
        assert list(result.applied) == [f"u{i}" for i in range(50)] and result.topic_count == 150
        assert [r.topic for r in result.refused] == [f"u{i}" for i in range(50, 100)]
        assert {r.code for r in result.refused} == {EXHAUSTED}
        assert "--max-topics-per-device" in result.refused[0].message
        with pytest.raises(PushError) as err:
            await sender.get_subscriptions("")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_backend_subscribe_is_checked_before_the_send_rate_is_charged(start_platform):
    """A request that can never succeed says why, spends none of the sender's tokens, and a
    request bigger than the burst is told to split, not to retry."""
    platform = await start_platform(send_rate=1, send_burst=5)
    async with PushSender(addr(platform.ports.api), rate_limit_retries=0) as sender:
        for _ in range(10):  # twice the burst, each refused for its bad name
            with pytest.raises(PushError) as err:
                await sender.subscribe(["no spaces"], device_ids=["d"])
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value.details
        with pytest.raises(PushError) as err:
            await sender.subscribe(["t"], device_ids=[f"d{i}" for i in range(6)])
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "split it" in err.value.details
        # The burst is still whole: five devices at once pass.
        reply = await sender.subscribe(["t"], device_ids=[f"d{i}" for i in range(5)])
        assert [r.device_id for r in reply.results] == [f"d{i}" for i in range(5)]


async def test_topic_and_direct_messages_to_one_device_keep_priority_overtaking(start_platform, clients):
    # Large limits so the slow device's backlog is kept, not dropped, and it is not disconnected.
    platform = await start_platform(
        session_queue_limit=20_000, session_queue_bytes=64 * 1024 * 1024, slow_consumer_seconds=600
    )
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="slow", device_id="slow-1")
    await device.call.write(edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=["alerts"], request_id="s")))
    answer = await asyncio.wait_for(device.call.read(), 10)
    assert list(answer.subscription.applied) == ["alerts"]
    api = clients("api", addr(platform.ports.api))
    payload = b"x" * 8192  # 24 MB of direct low messages: far more than the flow-control window
    low_ids = [
        (await api.send(device_id="slow-1", payload=payload, priority=message_pb2.PRIORITY_LOW)).message_id
        for _ in range(3000)
    ]
    session = platform.edge.hub.get("slow-1")
    await eventually(lambda: len(session.outbound) > 2000, what="a low backlog in the session queue")
    # A high topic message overtakes the queued direct lows; a low topic message queues behind them.
    high = await api.send(topic="alerts", payload=b"urgent", priority=message_pb2.PRIORITY_HIGH)
    await eventually(lambda: session.outbound.depth("high") == 1, what="the high topic message at the edge")
    still_queued = session.outbound.depth("low")
    assert still_queued > 2000
    late_low = await api.send(topic="alerts", payload=b"later", priority=message_pb2.PRIORITY_LOW)

    received = [m.message_id for m in await device.read_messages(3002, timeout=60)]
    position = received.index(high.message_id)
    assert position <= 3000 - still_queued, f"high arrived at {position}; {still_queued} lows were queued"
    assert received[-1] == late_low.message_id, "a low topic message keeps its place behind older lows"
    assert [m for m in received if m not in (high.message_id, late_low.message_id)] == low_ids


async def test_status_of_a_topic_message_is_counts(start_platform, registry_url, clients):
    platform = await start_platform(registry=registry_url, session_queue_limit=5, metric_label_keys=["campaign"])
    inbox = Inbox()
    subscribers = await _clients(platform, ["a", "b", "c"], inbox)
    # A fourth subscriber that never reads: its queue fills up, and the topic message is dropped there.
    stuck = clients("device", addr(platform.ports.edge))
    await stuck.hello(user_id="u-stuck", device_id="stuck")
    await stuck.call.write(edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=["deals"], request_id="s")))
    assert list((await asyncio.wait_for(stuck.call.read(), 10)).subscription.applied) == ["deals"]
    try:
        for client in subscribers.values():
            await client.subscribe("deals")
        api = clients("api", addr(platform.ports.api))
        # Fill the stream's flow-control window (however far gRPC grows it), then the 5-message queue.
        filler = push_pb2.SendBatchRequest(
            requests=[push_pb2.SendRequest(device_id="stuck", payload=b"f" * 60_000) for _ in range(20)]
        )
        session = platform.edge.hub.get("stuck")
        for _ in range(100):  # at most 120 MB
            if len(session.outbound) >= 5:
                break
            await api.stub.SendBatch(filler, timeout=30)
            await asyncio.sleep(0.05)  # let the edge's writer move what it can into the window
        await eventually(lambda: len(session.outbound) >= 5, what="the stuck device's queue full")
        async with PushSender(addr(platform.ports.api)) as sender:
            campaign = f"spring-{uuid.uuid4().hex[:8]}"  # its own label series in this process's registry
            sent = await sender.send(topic="deals", payload="20% off", labels={"campaign": campaign})
            await eventually(lambda: all(inbox.seen[n] for n in subscribers), what="3 copies")

            async def counted() -> bool:
                status = await sender.get_status(sent.message_id)
                return status.topic.devices_acked == 3

            await eventually(counted, what="3 acks counted")
            status = await sender.get_status(sent.message_id)
        assert status.topic.topic == "deals"
        assert (status.topic.edges_reached, status.topic.devices_written, status.topic.devices_acked) == (1, 3, 3)
        assert dict(status.topic.dropped) == {"queue_full": 1}
        assert not status.devices, "a topic message's status never lists devices"
        assert dict(status.labels) == {"campaign": campaign}
        # The label counters count devices, as for any message: 3 written, 3 acked.
        for state in ("delivered_to_edge", "acked"):
            labels = {"state": state, "label": "campaign", "value": campaign}
            assert REGISTRY.get_sample_value("pushplat_labelled_events_total", labels) == 3, state
    finally:
        await inbox.close()
        for client in subscribers.values():
            await client.close()


def _limit(name: str) -> float:
    return REGISTRY.get_sample_value("pushplat_limits_hit_total", {"limit": name}) or 0.0


async def test_every_topic_limit_is_counted(start_platform, clients):
    platform = await start_platform(max_topics_per_device=1, topic_changes_per_second=1.0)
    before = {
        name: _limit(name)
        for name in (
            "topic_name",
            "topics_per_request",
            "topic_devices",
            "topics_per_device",
            "topic_changes",
            "topic_delivery",
        )
    }
    api = clients("api", addr(platform.ports.api))
    for fields in ({"topic": "bad name"}, {"topic": "t", "delivery": message_pb2.AT_LEAST_ONCE}):
        with pytest.raises(grpc.aio.AioRpcError):
            await api.send(payload=b"x", **fields)
    for request in (
        push_pb2.SubscribeRequest(topics=[f"t{i}" for i in range(101)], device_ids=["d"]),
        push_pb2.SubscribeRequest(topics=["t"], device_ids=[f"d{i}" for i in range(1001)]),
    ):
        with pytest.raises(grpc.aio.AioRpcError):
            await api.stub.Subscribe(request, timeout=10)
    reply = await api.stub.Subscribe(push_pb2.SubscribeRequest(topics=["a", "b"], device_ids=["full"]), timeout=10)
    assert [r.topic for r in reply.results[0].refused] == ["b"]
    device = clients("device", addr(platform.ports.edge))
    await device.hello(user_id="u", device_id="d")
    for _ in range(3):  # a burst of 2 at 1/s, then refused
        await device.call.write(edge_pb2.ClientFrame(subscribe=edge_pb2.Subscribe(topics=["x"])))
        await asyncio.wait_for(device.call.read(), 10)
    grown = {name: _limit(name) - value for name, value in before.items()}
    assert grown == {
        "topic_name": 1,
        "topics_per_request": 1,
        "topic_devices": 1,
        "topics_per_device": 1,
        "topic_changes": 1,
        "topic_delivery": 1,
    }, grown
