"""Backends that are unreachable at start-up, or fail while the platform runs."""

from __future__ import annotations

import grpc
import pytest
from pushplat_client import PushError, PushSender

from tests.helpers import free_port, require_env
from tests.processes import Deployment, Role, run, service


@pytest.mark.parametrize(
    ("role", "flags", "text"),
    [
        ("edge", ["--registry", "redis://127.0.0.1:{port}/0"], "cannot open backends"),
        (
            "router",
            ["--registry", "redis+cluster://127.0.0.1:{port}", "--queue", "kafka://127.0.0.1:1"],
            "cannot open backends",
        ),
        ("api", ["--registry", "memory://", "--queue", "kafka://127.0.0.1:{port}"], "cannot reach Kafka"),
        ("edge", ["--registry", "memory://"], "only works when edge and router run in one process"),
        ("api", ["--queue", "memory://"], "only works when api and router run in one process"),
        ("api", ["--queue", "rabbit://x"], "unsupported queue URL"),
    ],
    ids=["redis-down", "cluster-down", "kafka-down", "memory-registry-split", "memory-queue-split", "bad-url"],
)
async def test_unreachable_or_unusable_backend_is_a_clear_startup_error(role, flags, text):
    port = free_port()
    ports = {"edge": ["--edge-port", "0", "--delivery-port", "0"], "api": ["--api-port", "0"], "router": []}[role]
    if role != "api":
        ports += ["--insecure-internal"]  # the backend check is what this test is about
    code, out, err = await run(
        role, *ports, *[f.format(port=port) for f in flags], "--kafka-publish-timeout-seconds", "2", timeout=60
    )
    out += err  # what the user sees on the terminal
    assert code == 2, out
    assert text in out, out


@pytest.mark.redis
@pytest.mark.kafka
async def test_kafka_dying_while_running_gives_unavailable_and_accepts_nothing(tmp_path):
    require_env("PUSHPLAT_TEST_KAFKA_URL")  # the broker jars are fetched by scripts/test
    async with service("kafka", tmp_path / "kafka", timeout=180) as kafka:
        deployment = Deployment(
            require_env("PUSHPLAT_TEST_REDIS_URL"), kafka.env["PUSHPLAT_TEST_KAFKA_URL"], tmp_path / "logs"
        )
        api: Role = await deployment.api("--kafka-publish-timeout-seconds", "3")
        try:
            async with PushSender(api.address) as sender:
                ok = await sender.send(device_id="d", payload="while Kafka is up")
                assert ok.message_id
                assert await kafka.stop() == 0
                with pytest.raises(PushError) as info:
                    await sender.send(device_id="d", payload="after Kafka died", idempotency_key="k1", timeout=20)
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
                assert "not accepted" in info.value.details or "Kafka" in info.value.details
            assert api.running, "the api must keep running"
        finally:
            await deployment.stop()


@pytest.mark.redis
async def test_registry_dying_while_running_gives_unavailable(tmp_path):
    async with service("redis", tmp_path / "redis") as redis:
        deployment = Deployment(
            redis.env["PUSHPLAT_TEST_REDIS_URL"], require_env("PUSHPLAT_TEST_KAFKA_URL"), tmp_path / "logs"
        )
        api = await deployment.api()
        try:
            async with PushSender(api.address) as sender:
                assert (await sender.get_presence("nobody")).user_id == "nobody"
                assert await redis.stop() == 0
                with pytest.raises(PushError) as info:
                    await sender.get_presence("nobody")
                assert info.value.code == grpc.StatusCode.UNAVAILABLE and "registry unavailable" in info.value.details
                with pytest.raises(PushError) as info:
                    await sender.send(device_id="d", payload="x", idempotency_key="k2")
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
                assert "idempotency store unavailable" in info.value.details
        finally:
            await deployment.stop()
