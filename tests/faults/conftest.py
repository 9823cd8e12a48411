"""Fixtures of the fault suite: every test gets fresh api, router and edge processes (and its own
Redis or Kafka where it breaks them: see tests.processes.service)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import require_env
from tests.processes import Deployment, Role


async def start_platform(
    deployment: Deployment,
    *,
    routers: int = 2,
    edges: int = 2,
    api_args: tuple[str, ...] = (),
    router_args: tuple[str, ...] = (),
    edge_args: tuple[str, ...] = (),
) -> tuple[Role, list[Role], list[Role]]:
    """The roles, started together (each waits for its own health): (api, routers, edges)."""
    roles = await asyncio.gather(
        deployment.api(*api_args),
        *(deployment.router(*router_args, metrics=True) for _ in range(routers)),
        *(deployment.edge(*edge_args) for _ in range(edges)),
    )
    return roles[0], list(roles[1 : 1 + routers]), list(roles[1 + routers :])


def shared_deployment(tmp_path: Path, redis_url: str = "", kafka_url: str = "") -> Deployment:
    return Deployment(
        redis_url or require_env("PUSHPLAT_TEST_REDIS_URL"),
        kafka_url or require_env("PUSHPLAT_TEST_KAFKA_URL"),
        tmp_path / "logs",
    )
