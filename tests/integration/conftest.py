"""Shared fixtures of the Redis store tests (registry, inbox, status, idempotency).

Start the services with scripts/services/redis.sh and redis-cluster.sh and source STATE_DIR/env:
PUSHPLAT_TEST_REDIS_URL and PUSHPLAT_TEST_REDIS_CLUSTER_URL select what runs. A missing service
is a skip on a workstation and a failure in CI (tests.helpers.require_env).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import pytest

from pushplat.redis_support import RedisStore
from tests.helpers import REDIS_DEPLOYMENTS as DEPLOYMENTS
from tests.helpers import REDIS_URL_ENV as URL_ENV
from tests.helpers import delete_prefix, free_port, require_env, with_prefix

S = TypeVar("S", bound=RedisStore)


@asynccontextmanager
async def _redis_store(cls: type[S] | Callable[[str], S], deployment: str, query: str = "") -> AsyncIterator[S]:
    url = require_env(URL_ENV[deployment])
    open_url = cls.from_url if isinstance(cls, type) else cls
    store = open_url(with_prefix(url, f"t{uuid.uuid4().hex[:12]}") + (f"&{query}" if query else ""))
    await store.ping()
    try:
        yield store
    finally:
        await delete_prefix(store)
        await store.close()


class UnreachableRedis:
    """A Redis URL, with a password, of a port that nothing listens on."""

    def __init__(self, scheme: str) -> None:
        self.port = free_port()  # nothing listens here now
        path = "/0" if scheme == "redis" else ""
        self.url = f"{scheme}://user:s3cret@127.0.0.1:{self.port}{path}"

    @asynccontextmanager
    async def store(self, cls: type[S]) -> AsyncIterator[S]:
        """A cls store on the URL, closed afterwards."""
        store = cls.from_url(self.url)
        try:
            yield store
        finally:
            await store.close()

    async def assert_unavailable_fast(self, call: Callable[[], Awaitable[object]], exc_type: type[Exception]) -> None:
        """The call fails with exc_type within 3 s, naming the server and the operation, and no password."""
        started = time.monotonic()
        with pytest.raises(exc_type) as info:
            await call()
        assert time.monotonic() - started < 3, "a call to a closed port must fail fast"
        message = str(info.value)
        assert f"127.0.0.1:{self.port}" in message and " failed: " in message, message
        assert "s3cret" not in message, "the password must not leak into errors"


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on a standalone redis-server and on a Redis Cluster."""
    return request.param


@pytest.fixture
def redis_store() -> Callable[..., AbstractAsyncContextManager]:
    """redis_store(cls, deployment, query=""): a cls store (or what the function cls opens from a URL)
    on a fresh key prefix of the deployment's server (query: more URL options), as an async context
    manager; its keys are removed after."""
    return _redis_store


@pytest.fixture(params=["redis", "redis+cluster"])
def unreachable_redis(request: pytest.FixtureRequest) -> UnreachableRedis:
    """Each test that takes it runs on an unreachable standalone URL and an unreachable cluster URL."""
    return UnreachableRedis(request.param)


@pytest.fixture
def weird_ids() -> list[str]:
    """Ids that a key scheme must keep apart: empty, braces (hash tags), separators, non-ASCII."""
    return ["", "%", "}x", "a{b}c", "{", "dév ü", "ユーザー", "x:y"]
