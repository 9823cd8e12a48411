from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from pushplat.config import Config
from pushplat.server import Server
from tests.helpers import REDIS_DEPLOYMENTS, REDIS_URL_ENV, Api, RawDevice, delete_prefix, require_env, with_prefix

# `pushplat dev` serves WebSockets on 50054 unless told otherwise, and tests run many `pushplat dev`
# processes at once: off in every process a test starts, unless it gives --ws-port.
os.environ.setdefault("PUSHPLAT_WS_PORT", "0")


@pytest.fixture
async def start_platform() -> AsyncIterator[Callable[..., object]]:
    """Start an embedded platform (all roles, in-memory stores) on free ports; stopped afterwards."""
    servers: list[Server] = []

    async def start(**overrides: object) -> Server:
        config = Config(edge_port=0, api_port=0, delivery_port=0, **overrides)
        server = Server(config)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def platform(start_platform: Callable[..., object]) -> Server:
    return await start_platform()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., object]]:
    """Factory for RawDevice / Api clients that are closed after the test."""
    opened: list[RawDevice | Api] = []

    def make(kind: str, address: str, **kwargs: object) -> RawDevice | Api:
        client = RawDevice(address) if kind == "device" else Api(address, **kwargs)
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()


@pytest.fixture(params=[pytest.param("memory"), *REDIS_DEPLOYMENTS])
async def registry_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """For a test that runs an embedded platform on each store: memory://, then a real standalone
    Redis and a real Redis Cluster (on a fresh key prefix, removed afterwards)."""
    if request.param == "memory":
        yield "memory://"
        return
    async with _prefixed_redis(request.param) as url:
        yield url


@pytest.fixture(params=REDIS_DEPLOYMENTS)
async def redis_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """registry_url without memory://: a real standalone Redis, then a real Redis Cluster."""
    async with _prefixed_redis(request.param) as url:
        yield url


@asynccontextmanager
async def _prefixed_redis(deployment: str) -> AsyncIterator[str]:
    from pushplat.registry.redis import RedisRegistry

    url = with_prefix(require_env(REDIS_URL_ENV[deployment]), f"t{uuid.uuid4().hex[:12]}")
    yield url
    store = RedisRegistry.from_url(url)
    try:
        await delete_prefix(store)
    finally:
        await store.close()
