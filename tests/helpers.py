"""Shared test helpers: free ports, bounded waits, service URLs, raw device streams, SDK inboxes."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from pushplat_client import PushClient
from pushplat_client.v1 import edge_pb2, edge_pb2_grpc, push_pb2, push_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll condition until it holds; fail after timeout (a bounded wait, never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def require_env(name: str) -> str:
    """A service URL from scripts/test; in CI a missing service is a failure, never a skip."""
    value = os.environ.get(name)
    if value:
        return value
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not set: scripts/test must start this service in CI")
    pytest.skip(f"{name} is not set (run scripts/test to start the real service)")
    raise AssertionError("unreachable")


def with_prefix(url: str, prefix: str) -> str:
    """A Redis URL with ?prefix= (or &prefix=) added, so a test's keys never meet another's."""
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


REDIS_URL_ENV = {"standalone": "PUSHPLAT_TEST_REDIS_URL", "cluster": "PUSHPLAT_TEST_REDIS_CLUSTER_URL"}
REDIS_DEPLOYMENTS = [
    pytest.param("standalone", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.cluster),
]


async def delete_prefix(store: Any) -> None:
    """Remove everything a test wrote under a RedisStore's prefix (on every master in a cluster)."""
    client = store.client
    keys = [key async for key in client.scan_iter(match=f"{store.prefix}:*", count=1000)]
    for key in keys:  # one by one: keys of different slots cannot share a DEL in a cluster
        await client.delete(key)


class Inbox:
    """What the application behind each SDK client sees: one pump per client appends keep(message)
    to seen[name] for every message the client yields. close() stops the pumps (not the clients)."""

    def __init__(self, keep: Callable[[Any], Any] = lambda message: message.payload.decode()) -> None:
        self.keep = keep
        self.seen: defaultdict[Any, list] = defaultdict(list)
        self.tasks: list[asyncio.Task] = []

    def follow(self, name: object, client: PushClient) -> None:
        async def pump() -> None:
            async for message in client:
                self.seen[name].append(self.keep(message))

        self.tasks.append(asyncio.create_task(pump()))

    async def connect(self, name: object, client: PushClient, timeout: float) -> None:
        """Open the client, wait until it is connected, then follow it."""
        await client.__aenter__()
        await client.wait_connected(timeout=timeout)
        self.follow(name, client)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class RawDevice:
    """A device stream driven frame by frame, for protocol-level tests."""

    def __init__(self, address: str, options: list[tuple[str, Any]] | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=options)
        self.call = edge_pb2_grpc.EdgeStub(self.channel).Connect()

    async def hello(self, *, user_id: str = "", device_id: str = "", token: str = "") -> edge_pb2.Welcome:
        await self.call.write(
            edge_pb2.ClientFrame(
                hello=edge_pb2.Hello(user_id=user_id, device_id=device_id, token=token, client_version="test")
            )
        )
        frame = await asyncio.wait_for(self.call.read(), 10)
        assert frame.HasField("welcome"), frame
        return frame.welcome

    async def read_messages(self, count: int, timeout: float = 10.0, ack: bool = True) -> list:
        messages: list = []
        async with asyncio.timeout(timeout):
            while len(messages) < count:
                frame = await self.call.read()
                assert frame is not grpc.aio.EOF, f"stream ended after {len(messages)} messages"
                if frame.HasField("pushes"):
                    batch = list(frame.pushes.messages)
                    messages.extend(batch)
                    if ack:
                        await self.call.write(
                            edge_pb2.ClientFrame(ack=edge_pb2.Ack(message_ids=[m.message_id for m in batch]))
                        )
        return messages

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


class Api:
    def __init__(self, address: str, api_key: str | None = None) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = push_pb2_grpc.PushStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    async def send(self, **fields: object) -> push_pb2.SendResponse:
        return await self.stub.Send(push_pb2.SendRequest(**fields), metadata=self.metadata, timeout=10)

    async def send_many(self, requests: list[dict], concurrency: int = 100) -> list[push_pb2.SendResponse]:
        """Send concurrently, in bounded parallel windows; responses come back in request order."""
        responses: list[push_pb2.SendResponse] = []
        for i in range(0, len(requests), concurrency):
            responses += await asyncio.gather(*(self.send(**r) for r in requests[i : i + concurrency]))
        return responses

    async def close(self) -> None:
        await self.channel.close()
