"""PushClient against a scripted in-process Edge: handshake, pushes, acks, dedup,
heartbeats, GoAway, reconnects and errors."""

from __future__ import annotations

import asyncio
import random
import socket

import grpc
import pytest
from pushplat_client import AuthError, Backoff, PushClient, PushError
from pushplat_client.v1 import edge_pb2

from tests.sdk.fakes import WAIT, FakeEdge, msg

pytestmark = pytest.mark.asyncio


class CountingBackoff(Backoff):
    """A real Backoff that counts how often the client asked for a failure delay."""

    def __init__(self, base: float = 0.01, cap: float = 0.05) -> None:
        super().__init__(base=base, cap=cap, rng=random.Random(0))
        self.calls = 0

    def next_delay(self) -> float:
        self.calls += 1
        return super().next_delay()


def make_client(edge: FakeEdge, **kwargs: object) -> PushClient:
    kwargs.setdefault("user_id", "u1")
    kwargs.setdefault("device_id", "d1")
    kwargs.setdefault("backoff", CountingBackoff())
    return PushClient(edge.address, **kwargs)  # type: ignore[arg-type]


async def next_message(client: PushClient) -> edge_pb2.ServerFrame:
    return await asyncio.wait_for(anext(client), WAIT)


async def test_needs_a_token_or_a_device_id() -> None:
    with pytest.raises(ValueError, match="token"):
        PushClient("127.0.0.1:1")
    with pytest.raises(ValueError, match="token"):
        PushClient("127.0.0.1:1", user_id="u1")
    PushClient("127.0.0.1:1", token="t")
    PushClient("127.0.0.1:1", device_id="d1")


async def test_hello_welcome_then_pushes_in_order(edge: FakeEdge) -> None:
    async with make_client(edge, token="tok", client_version="test/1") as client:
        conn = await edge.next_conn()
        assert (conn.hello.token, conn.hello.user_id, conn.hello.device_id) == ("tok", "u1", "d1")
        assert conn.hello.client_version == "test/1"
        await conn.welcome(session_id="sess-1", edge_id="edge-7")
        await client.wait_connected(WAIT)
        assert (client.session_id, client.edge_id, client.connects) == ("sess-1", "edge-7", 1)
        assert client.connected

        await conn.push(msg("m1", b"hello", content_type="text/plain", labels={"k": "v"}), msg("m2"))
        await conn.push(msg("m3"))
        got = [await next_message(client) for _ in range(3)]
        assert [m.message_id for m in got] == ["m1", "m2", "m3"]
        assert got[0].payload == b"hello"
        assert got[0].content_type == "text/plain"
        assert dict(got[0].labels) == {"k": "v"}


async def test_auto_acks_arrive_coalesced(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        ids = {f"m{i}" for i in range(50)}
        await conn.push(*(msg(i) for i in sorted(ids)))
        for _ in range(50):
            await next_message(client)
        frames = await conn.acks_until(ids)
        assert set(conn.acked) == ids
        # Handed over in one burst, so the acks travel together, not one frame per message.
        assert len(frames) <= 2


async def test_a_large_ack_goes_out_in_frames_the_edge_accepts(edge: FakeEdge) -> None:
    async with make_client(edge, auto_ack=False) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        ids = [f"m{i}" for i in range(2500)]
        await client.ack(*ids)
        sizes: list[int] = []
        while sum(sizes) < len(ids):
            sizes.append(len((await conn.next_frame("ack")).ack.message_ids))
        assert sizes == [1000, 1000, 500]
        assert conn.acked == ids, "in order, each id once"


async def test_duplicate_is_acked_but_not_handed_over(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"))
        assert (await next_message(client)).message_id == "m1"
        await conn.acks_until({"m1"})

        # The edge redelivers m1 (e.g. an inbox replay): the app must not see it again, but the
        # edge must get its ack again so it can drop the copy.
        await conn.push(msg("m1", requires_ack=True))
        frame = await conn.next_frame("ack")
        assert list(frame.ack.message_ids) == ["m1"]
        await conn.push(msg("m2"))
        assert (await next_message(client)).message_id == "m2"


async def test_duplicate_within_one_batch_is_dropped(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"), msg("m1"), msg("m2"))
        assert [(await next_message(client)).message_id for _ in range(2)] == ["m1", "m2"]
        await conn.acks_until({"m1", "m2"})
        assert conn.acked.count("m1") >= 1


async def test_manual_ack(edge: FakeEdge) -> None:
    async with make_client(edge, auto_ack=False) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"), msg("m2"))
        await next_message(client)
        await next_message(client)
        await client.ack("m2")
        # Nothing was acked on its own: the first ack frame holds only what the app acked.
        frame = await conn.next_frame("ack")
        assert list(frame.ack.message_ids) == ["m2"]
        await client.ack("m1")
        frame = await conn.next_frame("ack")
        assert list(frame.ack.message_ids) == ["m1"]


async def test_acks_made_while_disconnected_go_out_after_reconnect(edge: FakeEdge) -> None:
    async with make_client(edge, auto_ack=False) as client:
        first = await edge.next_conn()
        await first.welcome()
        await first.push(msg("m1"))
        await next_message(client)
        first.abort(grpc.StatusCode.UNAVAILABLE, "edge restarting")
        second = await edge.next_conn()  # the client is now between Hello and Welcome
        await client.ack("m1")
        await second.welcome()
        frame = await second.next_frame("ack")
        assert list(frame.ack.message_ids) == ["m1"]


async def test_heartbeat_pings_use_welcome_interval_and_pongs_keep_it_alive(edge: FakeEdge) -> None:
    loop = asyncio.get_running_loop()
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        welcomed_at = loop.time()
        await conn.welcome(heartbeat_ms=100)
        await client.wait_connected(WAIT)
        await conn.next_frame("ping")
        assert loop.time() - welcomed_at >= 0.1 - 0.01  # paced by Welcome, not sent at once
        # Four pings span 400 ms, beyond the 300 ms silence limit: the pongs kept it alive.
        for _ in range(3):
            await conn.next_frame("ping")
        assert client.connects == 1
        assert len(edge.all) == 1
        assert not conn.gone.is_set()


async def test_silent_edge_is_treated_as_dead_and_replaced(edge: FakeEdge) -> None:
    loop = asyncio.get_running_loop()
    async with make_client(edge, heartbeat_interval=0.05) as client:
        first = await edge.next_conn()
        first.auto_pong = False
        welcomed_at = loop.time()
        await first.welcome(heartbeat_ms=10_000)  # the client's own interval wins
        await first.next_frame("ping")
        second = await edge.next_conn()
        # Dead only after three silent intervals, not at the first unanswered ping.
        assert second.hello_at - welcomed_at >= 3 * 0.05 - 0.01
        await asyncio.wait_for(first.gone.wait(), WAIT)
        await second.welcome()
        await client.wait_connected(WAIT)
        assert client.connects == 2


async def test_go_away_reconnects_after_the_delay_without_backoff(edge: FakeEdge) -> None:
    loop = asyncio.get_running_loop()
    backoff = CountingBackoff(base=5.0, cap=5.0)  # would blow the time limit if used
    async with make_client(edge, backoff=backoff) as client:
        first = await edge.next_conn()
        await first.welcome(session_id="s-old")
        await client.wait_connected(WAIT)
        sent_at = loop.time()
        await first.go_away(300, reason=edge_pb2.GoAway.DRAINING)
        second = await edge.next_conn()
        assert second.hello_at - sent_at >= 0.3 - 0.01
        assert second.hello.device_id == "d1"
        await asyncio.wait_for(first.gone.wait(), WAIT)  # the old stream was closed
        assert client.last_go_away is not None
        assert client.last_go_away.reason == edge_pb2.GoAway.DRAINING
        assert client.last_go_away.reconnect_after_ms == 300

        await second.welcome(session_id="s-new")
        await second.push(msg("after"))
        assert (await next_message(client)).message_id == "after"
        assert (client.session_id, client.connects) == ("s-new", 2)
        assert backoff.calls == 0


async def test_go_away_before_welcome_is_honoured(edge: FakeEdge) -> None:
    loop = asyncio.get_running_loop()
    backoff = CountingBackoff(base=5.0, cap=5.0)
    async with make_client(edge, backoff=backoff) as client:
        first = await edge.next_conn()
        sent_at = loop.time()
        await first.go_away(100, reason=edge_pb2.GoAway.DRAINING)
        second = await edge.next_conn()
        assert second.hello_at - sent_at >= 0.1 - 0.01
        await second.welcome()
        await client.wait_connected(WAIT)
        assert client.connects == 1
        assert backoff.calls == 0


async def test_unavailable_then_reconnects(edge: FakeEdge) -> None:
    backoff = CountingBackoff()
    async with make_client(edge, backoff=backoff) as client:
        first = await edge.next_conn()
        first.abort(grpc.StatusCode.UNAVAILABLE, "try later")
        second = await edge.next_conn()
        await second.welcome()
        await second.push(msg("m1"))
        assert (await next_message(client)).message_id == "m1"
        assert client.connects == 1
        assert backoff.calls == 1
        assert backoff.attempt == 0  # reset by the Welcome


async def test_clean_end_of_stream_reconnects(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        first = await edge.next_conn()
        await first.welcome()
        await client.wait_connected(WAIT)
        first.end()
        second = await edge.next_conn()
        await second.welcome()
        await second.push(msg("m1"))
        assert (await next_message(client)).message_id == "m1"
        assert client.connects == 2


async def test_resource_exhausted_honours_retry_after(edge: FakeEdge) -> None:
    loop = asyncio.get_running_loop()
    async with make_client(edge) as client:
        first = await edge.next_conn()
        aborted_at = loop.time()
        first.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", trailing=[("retry-after-ms", "300")])
        second = await edge.next_conn()
        # The backoff alone (base 10 ms) would have come back much sooner.
        assert second.hello_at - aborted_at >= 0.3 - 0.01
        await second.welcome()
        await client.wait_connected(WAIT)


async def test_unauthenticated_raises_auth_error(edge: FakeEdge) -> None:
    async with make_client(edge, token="bad") as client:
        conn = await edge.next_conn()
        conn.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")
        with pytest.raises(AuthError) as info:
            await next_message(client)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details == "token expired"
        # Sticky, from both entry points, and no retry was made.
        with pytest.raises(AuthError):
            await next_message(client)
        with pytest.raises(AuthError):
            await client.wait_connected(WAIT)
        assert len(edge.all) == 1


async def test_invalid_argument_raises_push_error(edge: FakeEdge) -> None:
    async with make_client(edge) as client:
        conn = await edge.next_conn()
        conn.abort(grpc.StatusCode.INVALID_ARGUMENT, "first frame must be Hello")
        with pytest.raises(PushError) as info:
            await client.wait_connected(WAIT)
        assert not isinstance(info.value, AuthError)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert not info.value.retriable


async def test_reconnect_off_surfaces_the_retriable_error(edge: FakeEdge) -> None:
    async with make_client(edge, reconnect=False) as client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"))
        conn.abort(grpc.StatusCode.UNAVAILABLE, "gone")
        # Messages that arrived before the failure are still handed over first.
        assert (await next_message(client)).message_id == "m1"
        with pytest.raises(PushError) as info:
            await next_message(client)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_close_flushes_acks_half_closes_and_stops_iteration(edge: FakeEdge) -> None:
    client = make_client(edge)
    async with client:
        conn = await edge.next_conn()
        await conn.welcome()
        await conn.push(msg("m1"))
        assert (await next_message(client)).message_id == "m1"
        waiter = asyncio.create_task(anext(client))  # blocked iteration must be released
    # __aexit__ closed the client: the ack went out before the stream was half-closed.
    assert conn.acked == ["m1"]
    assert conn.client_half_closed.is_set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, WAIT)
    with pytest.raises(StopAsyncIteration):
        await next_message(client)
    assert client.closed
    assert not client.connected
    await client.close()  # idempotent


async def test_wait_connected_times_out_when_edge_is_unreachable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with PushClient(f"127.0.0.1:{port}", device_id="d1", backoff=CountingBackoff()) as client:
        with pytest.raises(TimeoutError):
            await client.wait_connected(0.2)
        assert client.connects == 0


async def test_close_does_not_hang_on_an_edge_that_ignores_the_half_close(edge: FakeEdge) -> None:
    edge.end_on_half_close = False
    loop = asyncio.get_running_loop()
    client = make_client(edge)
    connected = asyncio.create_task(client.wait_connected(WAIT))
    conn = await edge.next_conn()
    await conn.welcome()
    await connected
    started = loop.time()
    await client.close(grace=0.1)
    assert loop.time() - started < 0.9  # well under the 1 s default grace
    await asyncio.wait_for(conn.gone.wait(), WAIT)  # cancelled once the grace ran out
