"""Fixtures for tests that run pushplat as OS processes (see tests/processes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import require_env
from tests.processes import Deployment, ProcessGroup


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[ProcessGroup]:
    """`pushplat dev` servers and CLI clients, logging under tmp_path/logs; all killed afterwards."""
    group = ProcessGroup(tmp_path / "logs")
    try:
        yield group
    finally:
        await group.stop()


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    """api, routers and edges as processes on the shared Redis and Kafka; all killed afterwards."""
    group = Deployment(
        require_env("PUSHPLAT_TEST_REDIS_URL"), require_env("PUSHPLAT_TEST_KAFKA_URL"), tmp_path / "logs"
    )
    try:
        yield group
    finally:
        await group.stop()
