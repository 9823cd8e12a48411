"""Fixtures: a fake Edge and a fake Push api on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio
from pushplat_client.v1 import edge_pb2_grpc, push_pb2_grpc

from tests.sdk.fakes import FakeEdge, FakePush


@pytest_asyncio.fixture
async def edge() -> AsyncIterator[FakeEdge]:
    fake = FakeEdge()
    server = grpc.aio.server()
    edge_pb2_grpc.add_EdgeServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.address = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        for conn in fake.all:
            conn.end()
        await server.stop(grace=None)


@pytest_asyncio.fixture
async def push_api() -> AsyncIterator[FakePush]:
    fake = FakePush()
    server = grpc.aio.server()
    push_pb2_grpc.add_PushServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.address = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await server.stop(grace=None)
