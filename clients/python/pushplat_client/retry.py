"""Retries on the api's rate-limit hint, shared by PushSender's calls and SendStream's sends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from .errors import PushError

T = TypeVar("T")


async def retry_rate_limited(
    attempt: Callable[[float | None], Awaitable[T]], *, retries: int, max_wait: float, timeout: float | None
) -> T:
    """Run attempt(seconds left, or None) until it returns. A RESOURCE_EXHAUSTED PushError with
    a retry hint is retried after that hint, at most `retries` times, while the hint is at most
    `max_wait` and ends before the deadline; anything else is raised as it is."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    for tries in range(retries + 1):
        remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
        try:
            return await attempt(remaining)
        except PushError as error:
            wait = error.retry_after
            if (
                error.code != grpc.StatusCode.RESOURCE_EXHAUSTED
                or wait is None
                or tries == retries
                or wait > max_wait
                or (deadline is not None and loop.time() + wait >= deadline)
            ):
                raise
            # A little jitter, so that senders throttled together do not come back together.
            await asyncio.sleep(wait * (1.0 + random.uniform(0.0, 0.1)))
    raise AssertionError("unreachable")
