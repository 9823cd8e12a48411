"""Topics across separate processes on real Redis and Kafka: two edges, two routers, one api."""

from __future__ import annotations

import pytest
from pushplat_client import Backoff, PushClient, PushSender

from tests.helpers import Inbox, eventually

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


async def test_one_topic_send_reaches_subscribers_on_both_edges_only(deployment):
    api, _routers, (edge_a, edge_b) = await deployment.platform(routers=2, edges=2)
    names = [f"d{i}" for i in range(8)]
    clients = {
        name: PushClient((edge_a if i % 2 else edge_b).address, user_id=f"u{i % 3}", device_id=name)
        for i, name in enumerate(names)
    }
    inbox = Inbox()
    try:
        for name, client in clients.items():
            await inbox.connect(name, client, timeout=15)
        # d0..d3 subscribe themselves; u2's devices (d2, d5) are subscribed by the backend.
        for name in names[:4]:
            result = await clients[name].subscribe("launch")
            assert list(result.applied) == ["launch"]
        async with PushSender(api.address) as sender:
            reply = await sender.subscribe(["launch"], user_ids=["u2"])
            assert {r.device_id for r in reply.results} == {"d2", "d5"}
            # The control record reaches d5's edge through the lanes: wait for its effect.
            want = {"d0", "d1", "d2", "d3", "d5"}

            async def everyone_subscribed() -> bool:
                await sender.send(topic="launch", payload="probe")
                return all("probe" in inbox.seen[n] for n in want)

            await eventually(everyone_subscribed, 30, what="every subscriber on either edge")
            sent = await sender.send(topic="launch", payload="go", labels={"campaign": "x"})
            await eventually(lambda: all("go" in inbox.seen[n] for n in want), 30, what="the topic message")
            for name in set(names) - want:
                await sender.send(device_id=name, payload="marker")
            await eventually(lambda: all(inbox.seen[n] for n in set(names) - want), 30, what="markers")
            for name in set(names) - want:
                assert inbox.seen[name] == ["marker"], name
            for name in want:
                assert inbox.seen[name].count("go") == 1

            # Its status is counts from both edges (Redis), never a list of devices.
            async def counted() -> bool:
                return (await sender.get_status(sent.message_id)).topic.devices_acked == len(want)

            await eventually(counted, 30, what="every ack counted")
            status = await sender.get_status(sent.message_id)
            assert (status.topic.edges_reached, status.topic.devices_written) == (2, len(want))
            assert not status.devices and not status.topic.dropped
    finally:
        await inbox.close()
        for client in clients.values():
            await client.close()


async def test_subscriptions_survive_a_kill_9_of_the_edge_and_a_reconnect_to_the_other(deployment):
    api, _routers, (edge_a, edge_b) = await deployment.platform(routers=1, edges=2)
    fast = Backoff(base=0.05, cap=0.5)
    # The device knows both edges and starts on A; after A dies it reconnects to B.
    mover = PushClient([edge_a.address, edge_b.address], user_id="u", device_id="mover", backoff=fast)
    mover._edge_index = 0  # start on edge A (the client otherwise picks one at random)
    inbox = Inbox()
    try:
        await inbox.connect("mover", mover, timeout=15)
        assert mover.edge_id == deployment.edge_id("edge0")
        await mover.subscribe("breaking")
        await edge_a.kill()  # kill -9: the session is never closed cleanly, nothing is unsubscribed
        await eventually(lambda: mover.connected and mover.edge_id == deployment.edge_id("edge1"), 30, what="B")
        async with PushSender(api.address) as sender:

            async def got_it() -> bool:
                await sender.send(topic="breaking", payload="after the kill")
                return "after the kill" in inbox.seen["mover"]

            await eventually(got_it, 30, what="the topic message on the other edge, restored from Redis")
            assert list((await sender.get_subscriptions("mover")).topics) == ["breaking"]
    finally:
        await inbox.close()
        await mover.close()
