"""Topics from the command line, as a user runs it: `pushplat listen --topic`, `pushplat send
--topic`, `pushplat topics DEVICE` and `pushplat status` on a real `pushplat dev`."""

from __future__ import annotations

import asyncio
import json

from tests.helpers import eventually
from tests.processes import run


async def test_listen_subscribes_send_reaches_it_and_topics_lists_it(processes):
    server = await processes.dev()
    listener = await processes.client(
        "listen", "--edge", server.edge, "--device", "cli-1", "--topic", "alerts", "--topic", "news", "--count", "1"
    )

    async def subscribed() -> bool:
        code, out, _ = await run("topics", "--api", server.api, "cli-1")
        return code == 0 and json.loads(out).get("topics") == ["alerts", "news"]

    await eventually(subscribed, 30, what="pushplat topics listing the listener's subscriptions")
    code, out, err = await run("send", "--api", server.api, "--topic", "news", "--priority", "high", "breaking")
    assert code == 0, err
    message_id = json.loads(out)["message_id"]
    line = await asyncio.wait_for(listener.stdout.readline(), 30)
    received = json.loads(line)
    assert (received["message_id"], received["payload"], received["topic"]) == (message_id, "breaking", "news")
    assert await asyncio.wait_for(listener.wait(), 30) == 0

    async def counted() -> bool:
        code, out, _ = await run("status", "--api", server.api, message_id)
        return code == 0 and json.loads(out).get("topic", {}).get("devices_acked") == "1"

    await eventually(counted, 30, what="the topic message's status counting one ack")


async def test_topic_errors_are_one_line_and_exit_codes(processes):
    server = await processes.dev()
    code, _out, err = await run("send", "--api", server.api, "--topic", "no spaces", "x")
    assert code == 1 and "INVALID_ARGUMENT" in err and "[A-Za-z0-9_.~%-]" in err and "Traceback" not in err
    code, _out, err = await run("send", "--api", server.api, "--topic", " ", "x")
    assert code == 2 and "--topic needs an id" in err
    code, _out, err = await run("listen", "--edge", server.edge, "--device", "d", "--topic", "bad name", "--count", "1")
    assert code == 1 and "refused" in err and "bad name" in err


async def test_listen_takes_more_topics_than_one_frame_and_says_when_no_edge_answers(processes):
    server = await processes.dev()
    many = [arg for i in range(150) for arg in ("--topic", f"t{i}")]
    listener = await processes.client("listen", "--edge", server.edge, "--device", "cli-many", *many, "--count", "1")

    async def all_subscribed() -> bool:
        code, out, _ = await run("topics", "--api", server.api, "cli-many")
        return code == 0 and len(json.loads(out).get("topics", [])) == 150

    await eventually(all_subscribed, 30, what="all 150 topics subscribed over two Subscribe frames")
    listener.kill()
    # Nothing listens on port 1: the subscribe waits its 10 s for a connection, then one line.
    code, _out, err = await run("listen", "--edge", "127.0.0.1:1", "--device", "d", "--topic", "x", "--count", "1")
    assert code == 1 and "DEADLINE_EXCEEDED" in err and "Traceback" not in err, err
