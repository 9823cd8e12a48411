"""Creating the lane topics, and constructing kafka-python clients that clean up after a failed start."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TypeVar

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from pushplat.logs import kv
from pushplat.queue.base import QueueUnavailable
from pushplat.queue.kafka.settings import KafkaSettings

log = logging.getLogger("pushplat.queue.kafka")
T = TypeVar("T")


def build_closing_on_failure(build: Callable[[Callable[..., Any]], T], default_client: Callable[..., Any]) -> T:
    """Construct a kafka-python client; if its constructor raises, close what it opened.

    KafkaConsumer and KafkaAdminClient start an IO thread before they bootstrap, and a
    constructor that raises leaves that thread (and its sockets) behind with no handle to
    close it. Passing our own `kafka_client` factory gives us that handle.
    """
    opened: list[Any] = []

    def factory(**configs: Any) -> Any:
        client = default_client(**configs)
        opened.append(client)
        return client

    try:
        return build(factory)
    except BaseException:
        for client in opened:
            with suppress(Exception):
                client.close()
        raise


def ensure_topics(settings: KafkaSettings) -> dict[str, int]:
    """Create the lane topics that are missing; return topic -> partition count. Blocking.

    Topics are created here, explicitly, and every client runs with
    allow_auto_create_topics=False: a broker with auto.create.topics.enable would otherwise
    create a lane on first use with the broker's default partition count.
    """
    timeout_ms = settings.connect_timeout_ms
    admin = build_closing_on_failure(
        lambda factory: KafkaAdminClient(
            bootstrap_servers=settings.brokers,
            client_id=f"{settings.client_id}-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            kafka_client=factory,
        ),
        KafkaAdminClient.DEFAULT_CONFIG["kafka_client"],
    )
    try:
        wanted = list(settings.topics.values())
        existing = set(admin.list_topics())
        missing = [topic for topic in wanted if topic not in existing]
        if missing:
            spec = {
                t: {"num_partitions": settings.partitions, "replication_factor": settings.replication} for t in missing
            }
            result = admin.create_topics(spec, timeout_ms=timeout_ms, raise_errors=False)
            for topic in result["topics"]:
                error = kafka_errors.for_code(topic["error_code"])
                # Another api or router may have created it between list and create.
                if error is kafka_errors.TopicAlreadyExistsError:
                    continue
                if error is not kafka_errors.NoError:
                    raise QueueUnavailable(
                        f"cannot create Kafka topic {topic['name']} ({settings.partitions} partitions, "
                        f"replication {settings.replication}) at {settings.where}: "
                        f"{error.__name__}: {topic.get('error_message') or ''}".rstrip(": ")
                    )
                log.info(
                    kv(
                        "kafka.topic_created",
                        topic=topic["name"],
                        partitions=settings.partitions,
                        replication=settings.replication,
                    )
                )
        # CreateTopics returns before every partition has a leader; wait so that the first
        # publish does not stall on metadata.
        admin.wait_for_topics(wanted, timeout_ms=timeout_ms)
        counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(wanted)}
        for topic, count in counts.items():
            if count != settings.partitions:
                # Not an error: partitions can only grow, and an operator may have grown them.
                log.info(kv("kafka.topic_partitions", topic=topic, partitions=count, configured=settings.partitions))
        return counts
    finally:
        with suppress(Exception):
            admin.close()
