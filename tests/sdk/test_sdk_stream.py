"""PushSender.stream() against an in-process Push servicer: answers matched by request_id, the
client-side window, per-item errors and rate-limit retries, and a failed stream."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from pushplat_client import AuthError, PushError, PushSender

from tests.helpers import eventually
from tests.sdk.fakes import FakePush

pytestmark = pytest.mark.asyncio


async def test_sends_are_matched_to_their_answers(push_api: FakePush) -> None:
    push_api.reverse_pairs = True  # each pair answered in reverse: only matching by id gets them right
    async with PushSender(push_api.address, api_key="k") as sender, sender.stream(window=8) as stream:
        replies = await asyncio.gather(*(stream.send(device_id=f"d{i}", payload=f"p{i}") for i in range(40)))
    by_request = {r.request_id: r.device_id for r in push_api.requests}
    assert len(by_request) == 40, "every request has its own request_id"
    assert [reply.message_id for reply in replies] == [f"m-d{i}" for i in range(40)]
    for reply in replies:
        assert by_request[reply.request_id] == reply.message_id.removeprefix("m-")
    assert {r.payload for r in push_api.requests} == {f"p{i}".encode() for i in range(40)}
    assert push_api.metadata[0]["authorization"] == "Bearer k"


async def test_the_window_bounds_unanswered_requests(push_api: FakePush) -> None:
    push_api.answering.clear()  # the api reads but does not answer
    async with PushSender(push_api.address) as sender:
        stream = sender.stream(window=3)
        sends = [asyncio.create_task(stream.send(device_id="d", payload=str(i))) for i in range(10)]
        await eventually(lambda: len(push_api.requests) == 3, timeout=5, what="the first 3 requests at the api")
        # The other 7 wait for a slot on the client: none of them has been written.
        await asyncio.sleep(0)
        assert stream.unanswered == 3 and len(push_api.requests) == 3
        assert sum(not t.done() for t in sends) == 10
        push_api.answering.set()
        replies = await asyncio.gather(*sends)
        await stream.close()
    assert len(replies) == 10 and len(push_api.requests) == 10 and stream.unanswered == 0


async def test_a_refused_item_fails_only_its_own_send(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender, sender.stream() as stream:
        results = await asyncio.gather(
            stream.send(device_id="d", payload="ok-1"),
            stream.send(device_id="d", payload="refuse"),
            stream.send(device_id="d", payload="ok-2"),
            return_exceptions=True,
        )
        after = await stream.send(device_id="d", payload="after")
    assert isinstance(results[1], PushError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert results[1].details == "refused" and not results[1].retriable
    assert results[0].message_id and results[2].message_id and after.message_id, "the stream carried on"


async def test_a_rate_limited_item_is_retried_after_the_hint(push_api: FakePush) -> None:
    async with PushSender(push_api.address) as sender, sender.stream() as stream:
        reply = await stream.send(device_id="d", payload="slow-down")
    assert reply.message_id
    assert [r.payload for r in push_api.requests] == [b"slow-down", b"slow-down"], "one retry"
    async with PushSender(push_api.address, rate_limit_retries=0) as sender, sender.stream() as stream:
        push_api.rate_limited_once.clear()
        with pytest.raises(PushError) as info:
            await stream.send(device_id="d", payload="slow-down")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.retry_after == pytest.approx(0.02)


async def test_a_failed_stream_fails_every_waiting_send(push_api: FakePush) -> None:
    push_api.fail = (grpc.StatusCode.UNAUTHENTICATED, "unknown API key", ())
    async with PushSender(push_api.address, api_key="wrong") as sender:
        stream = sender.stream()
        results = await asyncio.gather(
            *(stream.send(device_id="d", payload="x") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, AuthError) for r in results), results
        with pytest.raises(AuthError):
            await stream.send(device_id="d", payload="later")
        await stream.close()


async def test_the_window_must_be_positive() -> None:
    async with PushSender("127.0.0.1:1") as sender:
        with pytest.raises(ValueError, match="window"):
            sender.stream(window=0)


async def test_close_waits_a_bounded_time_for_answers(push_api: FakePush) -> None:
    push_api.answering.clear()  # the api reads but never answers
    async with PushSender(push_api.address) as sender:
        stream = sender.stream(window=4)
        send = asyncio.create_task(stream.send(device_id="d", payload="x"))
        await eventually(lambda: len(push_api.requests) == 1, timeout=5, what="the request at the api")
        await asyncio.wait_for(stream.close(timeout=0.2), 5)
        with pytest.raises(PushError) as err:
            await send
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        push_api.answering.set()
