"""Issue 14 in a real browser: the demo page's Topics form (the browser SDK's subscribe and
unsubscribe over the edge's WebSocket) in headless Chromium, and Send(topic=...) reaching it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from pushplat_client import PushSender

from tests.browser.conftest import Page
from tests.browser.test_browser import CONNECT_TIMEOUT, EVENT_TIMEOUT, connected, page_url, shown
from tests.helpers import eventually

pytestmark = pytest.mark.timeout(240)
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def change_topics(page: Page, kind: str, topics: str) -> dict[str, Any]:
    """Type topics into the page's Topics form, press Subscribe or Unsubscribe, and return the
    SubscriptionResult the page got (as window.demo mirrors it)."""
    before = len((await page.demo())["subscriptions"])
    await page.fill("topics", topics)
    await page.click(kind)
    demo = await page.wait(lambda d: len(d["subscriptions"]) > before, EVENT_TIMEOUT, f"the answer to {kind}")
    [entry] = demo["subscriptions"][before:]
    assert entry["kind"] == kind and "error" not in entry, entry
    return entry


def topic_counted(sender: PushSender, message_id: str, **counts: int) -> Any:
    """A condition for eventually: GetStatus's topic aggregate has reached counts."""

    async def reached() -> bool:
        status = (await sender.get_status(message_id)).topic
        return all(getattr(status, name) >= count for name, count in counts.items())

    return reached


async def test_a_page_subscribes_gets_the_topic_send_acks_it_and_status_counts_it(processes, browser, tmp_path: Path):
    dev = await processes.dev(ws=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="gina", device="gina-tab"))
    await page.wait(connected, CONNECT_TIMEOUT, "the demo page to connect")

    result = await change_topics(page, "subscribe", "scores.nba")
    assert (result["applied"], result["refused"], result["topicCount"]) == (["scores.nba"], [], 1)
    async with PushSender(dev.api) as sender:
        assert list((await sender.get_subscriptions("gina-tab")).topics) == ["scores.nba"]
        sent = await sender.send(topic="scores.nba", payload="LAL 101 - 99 BOS", priority="high")
        demo = await page.wait(shown(sent.message_id), EVENT_TIMEOUT, "the topic message on the page")
        [message] = demo["messages"]
        assert (message["id"], message["payload"], message["topic"], message["priority"]) == (
            sent.message_id,
            "LAL 101 - 99 BOS",
            "scores.nba",
            "high",
        )
        await eventually(
            topic_counted(sender, sent.message_id, devices_acked=1), EVENT_TIMEOUT, "GetStatus: the page's ack counted"
        )
        status = await sender.get_status(sent.message_id)
    assert status.topic.topic == "scores.nba"
    # One edge, one subscriber (this tab): counts, never a per-device list.
    counts = (status.topic.edges_reached, status.topic.devices_written, status.topic.devices_acked)
    assert counts == (1, 1, 1)
    assert not status.topic.dropped and not status.devices
    table = await page.text("messages")
    assert "scores.nba" in table and "LAL 101 - 99 BOS" in table
    assert await page.rows_with(sent.message_id) == 1
    assert "applied [scores.nba]" in await page.text("subscriptions")
    await page.screenshot("demo-page-topics.png", tmp_path)


async def test_an_unsubscribed_page_gets_no_topic_message(processes, browser):
    dev = await processes.dev(ws=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="hank", device="hank-tab"))
    await page.wait(connected, CONNECT_TIMEOUT, "the demo page to connect")
    await change_topics(page, "subscribe", "deals")
    async with PushSender(dev.api) as sender:
        before = await sender.send(topic="deals", payload="while subscribed")
        await page.wait(shown(before.message_id), EVENT_TIMEOUT, "the topic message while subscribed")

        result = await change_topics(page, "unsubscribe", "deals")
        assert (result["applied"], result["refused"], result["topicCount"]) == (["deals"], [], 0)
        assert list((await sender.get_subscriptions("hank-tab")).topics) == []
        after = await sender.send(topic="deals", payload="after unsubscribe")
        # The edge got it and wrote it to nobody; then a direct message is the next thing the page sees.
        await eventually(
            topic_counted(sender, after.message_id, edges_reached=1), EVENT_TIMEOUT, "the edge's count for the send"
        )
        assert (await sender.get_status(after.message_id)).topic.devices_written == 0
        marker = await sender.send(device_id="hank-tab", payload="direct, after the topic send")
        demo = await page.wait(shown(marker.message_id), EVENT_TIMEOUT, "the direct message")
    assert [(m["payload"], m["topic"]) for m in demo["messages"]] == [
        ("while subscribed", "deals"),
        ("direct, after the topic send", ""),
    ]
    assert await page.rows_with(after.message_id) == 0


async def test_a_bad_topic_name_is_refused_alone_and_the_good_one_is_subscribed(processes, browser):
    dev = await processes.dev(ws=True)
    page = await browser()
    await page.open(page_url(dev.page_url, user="iris", device="iris-tab"))
    await page.wait(connected, CONNECT_TIMEOUT, "the demo page to connect")
    too_long = "x" * 257
    result = await change_topics(page, "subscribe", f"weather.oslo, has space, {too_long}")
    assert (result["applied"], result["topicCount"]) == (["weather.oslo"], 1)
    # The edge echoes a long refused name cut short (as it logs names), so match on its start.
    refused = {r["topic"][:20]: r for r in result["refused"]}
    assert set(refused) == {"has space", too_long[:20]}, result
    # The README's error table: a name off [A-Za-z0-9_.~%-]{1,256} is INVALID_ARGUMENT, that topic alone.
    assert {r["code"] for r in refused.values()} == {INVALID_ARGUMENT}
    assert "contains ' '" in refused["has space"]["message"], refused
    assert "257 characters; the limit is 256" in refused[too_long[:20]]["message"], refused
    shown_text = await page.text("subscriptions")
    assert "applied [weather.oslo]" in shown_text and "INVALID_ARGUMENT" in shown_text
    async with PushSender(dev.api) as sender:
        assert list((await sender.get_subscriptions("iris-tab")).topics) == ["weather.oslo"]
        # The refusal did not end the connection: the same one gets the good topic's message.
        sent = await sender.send(topic="weather.oslo", payload="rain at 3pm")
        demo = await page.wait(shown(sent.message_id), EVENT_TIMEOUT, "the good topic's message")
    assert demo["connects"] == 1 and connected(demo)
    assert [(m["payload"], m["topic"]) for m in demo["messages"]] == [("rain at 3pm", "weather.oslo")]


async def test_a_reloaded_page_keeps_its_topics_from_the_store_on_either_edge(deployment, browser):
    """Distributed mode (Redis, Kafka): subscriptions are the device's, in the store, so a new
    connection gets them without subscribing again, on the same edge or another one."""
    await deployment.api()
    await deployment.router()
    a = await deployment.edge(ws=True)
    b = await deployment.edge(ws=True)
    api = deployment.roles[0]
    page = await browser()
    await page.open(page_url(a.page_url, user="jack", device="jack-tab", edges=a.ws_url))
    demo = await page.wait(connected, CONNECT_TIMEOUT, "the page to connect to edge a")
    assert demo["edgeId"] == deployment.edge_id("edge0")
    await change_topics(page, "subscribe", "alerts")

    on_b = page_url(b.page_url, user="jack", device="jack-tab")
    async with PushSender(api.address) as sender:
        # Each new page connects once and never subscribes; the edge restores the device's topics
        # before its Welcome, so "connected" means a topic Send can reach it.
        for where, open_page, edge in (
            ("a reload on edge a", page.reload, "edge0"),
            ("a new tab on edge b", lambda: reopen(page, on_b), "edge1"),
        ):
            await open_page()
            demo = await page.wait(connected, CONNECT_TIMEOUT, f"{where} to connect")
            assert demo["connects"] == 1 and demo["subscriptions"] == [] and demo["messages"] == [], demo
            assert demo["edgeId"] == deployment.edge_id(edge)
            sent = await sender.send(topic="alerts", payload=f"after {where}")
            demo = await page.wait(shown(sent.message_id), EVENT_TIMEOUT, f"the topic message after {where}")
            assert [(m["payload"], m["topic"]) for m in demo["messages"]] == [(f"after {where}", "alerts")]


async def reopen(page: Page, url: str) -> None:
    """Close the tab (and its WebSocket) and open url in a fresh one."""
    await page.close_tab()
    await page.open(url)
