"""PushClient toward the app: a bounded buffer with backpressure, expired messages dropped, and
acks after processing (auto_ack=False + client.processing)."""

from __future__ import annotations

import time

import pytest
from pushplat_client import PushClient

from tests.helpers import eventually
from tests.sdk.fakes import WAIT, FakeEdge, msg
from tests.sdk.test_sdk_client import make_client, next_message

pytestmark = pytest.mark.asyncio


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_max_buffered_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        PushClient("127.0.0.1:1", device_id="d", max_buffered=0)


async def test_buffer_is_bounded_the_reader_pauses_and_nothing_is_lost(edge: FakeEdge) -> None:
    async with make_client(edge, max_buffered=5, heartbeat_interval=0.1) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        ids = [f"m{i:02}" for i in range(40)]
        for mid in ids:  # one frame each: the client must stop taking frames, not just messages
            await conn.push(msg(mid))
        high = 0

        async def paused() -> bool:
            nonlocal high
            high = max(high, client.buffered)
            return client.waiting_for_app and client.buffered == 5

        await eventually(paused, WAIT * 4, what="the buffer to fill and the reader to pause")
        # Paused for longer than 3 heartbeat intervals: the client still pings and does not take
        # the unread stream for a dead edge.
        pings = conn.pings
        await eventually(lambda: conn.pings >= pings + 6, WAIT * 4, what="pings while paused")
        assert client.buffered == 5 and high <= 5 and client.connects == 1
        got = [(await next_message(client)).message_id for _ in ids]
        assert got == ids and client.connects == 1
        assert not client.waiting_for_app and client.buffered == 0


async def test_expired_messages_are_never_handed_over(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        soon = now_ms() + 300
        await conn.push(
            msg("past", expires_at_ms=now_ms() - 1),
            msg("no-expiry"),
            msg("future", expires_at_ms=now_ms() + 60_000),
            msg("soon", expires_at_ms=soon),
            msg("last"),
        )
        assert (await next_message(client)).message_id == "no-expiry"
        assert (await next_message(client)).message_id == "future"
        # "soon" waits in the buffer until its expiry passes: it is dropped at hand-over time.
        await eventually(lambda: now_ms() > soon, WAIT, what="the expiry to pass")
        assert (await next_message(client)).message_id == "last"
        assert client.expired == 2
        await conn.acks_until({"no-expiry", "future", "last"})
        assert not {"past", "soon"} & set(conn.acked)


async def test_processing_acks_on_success_only_and_a_failure_is_redelivered(edge: FakeEdge) -> None:
    async with make_client(edge, auto_ack=False) as client:
        first = await edge.next_conn()
        await first.welcome()
        await first.push(msg("ok", requires_ack=True), msg("boom", requires_ack=True), msg("after", requires_ack=True))
        message = await next_message(client)
        async with client.processing(message):
            pass
        await first.acks_until({"ok"})
        failing = await next_message(client)
        with pytest.raises(RuntimeError, match="app crashed"):
            async with client.processing(failing):
                raise RuntimeError("app crashed")
        message = await next_message(client)
        async with client.processing(message):
            pass
        await first.acks_until({"after"})
        assert "boom" not in first.acked
        # The edge replays what is unacked on the next connection: "boom" is handed over again.
        first.end()
        second = await edge.next_conn(timeout=WAIT * 4)
        await second.welcome()
        await second.push(msg("boom", requires_ack=True))
        again = await next_message(client)
        assert again.message_id == "boom"
        async with client.processing(again):
            pass
        await second.acks_until({"boom"})


async def test_processing_needs_auto_ack_off(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"))
        message = await next_message(client)
        with pytest.raises(RuntimeError, match="auto_ack=False"):
            async with client.processing(message):
                pass
