"""Topics in every SDK against a real `pushplat dev`: each language's device subscribes over its
stream and gets a topic message a Python backend sends; each language's backend sends to a
topic a Python device is subscribed to."""

from __future__ import annotations

import pytest
from pushplat_client import PushClient, PushSender

from tests.interop.conftest import Platform, Program
from tests.interop.test_interop import Start, python_receives, unique

pytestmark = pytest.mark.asyncio


@pytest.fixture
def topic_programs(go_program: Program, node_program: Program, java_program: Program) -> tuple[Program, ...]:
    return (go_program, node_program, java_program)


async def test_every_sdk_subscribes_and_sends_to_topics(
    dev_platform: Platform, run_program: Start, topic_programs: tuple[Program, ...]
) -> None:
    topic = unique("topic")
    listeners = []
    for program in topic_programs:
        args = program.listen_args(dev_platform.edge, user=unique("u"), device=unique(f"{program.name}-dev"), count=1)
        listeners.append(await run_program(program, [*args, "--topic", topic]))
    for dev in listeners:
        await dev.expect("connected", timeout=30)
        subscribed = await dev.expect("subscribed", timeout=30)
        assert subscribed["applied"] == [topic] and subscribed["refused"] == 0, (dev.name, subscribed)
    async with PushSender(dev_platform.api) as sender:
        sent = await sender.send(topic=topic, payload="to every subscriber", priority="high")
    for dev in listeners:
        event = await dev.expect("message")
        assert (event["message_id"], event["payload"], event["topic"]) == (
            sent.message_id,
            "to every subscriber",
            topic,
        )
        assert await dev.finish() == 0, dev.events

    # Each other-language backend sends to a topic a Python device holds.
    async with PushClient(dev_platform.edge, user_id=unique("u"), device_id=unique("py-dev")) as device:
        result = await device.subscribe(topic)
        assert list(result.applied) == [topic]
        for backend in topic_programs:
            running = await run_program(
                backend, ["send", "--api", dev_platform.api, "--topic", topic, f"from-{backend.name}"]
            )
            reply = await running.expect("sent", timeout=30)
            assert await running.finish() == 0
            got = await python_receives(device)
            assert (got.message_id, got.payload, got.topic) == (
                reply["message_id"],
                f"from-{backend.name}".encode(),
                topic,
            )
