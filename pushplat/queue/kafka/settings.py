"""What both ends need to reach the lanes: brokers, topics, timeouts and group, from Config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pushplat.messages import LANES
from pushplat.queue.base import QueueUnavailable

if TYPE_CHECKING:
    from pushplat.config import Config

DEFAULT_PORT = 9092


def parse_kafka_url(url: str) -> list[str]:
    """`kafka://host:port[,host:port]` -> ["host:port", ...]; a ValueError says what is wrong."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise ValueError(f"unsupported Kafka URL {url!r}: use kafka://host:port[,host:port]")
    brokers = []
    for part in parsed.netloc.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep:
            host, port = part.strip(), str(DEFAULT_PORT)
        if not host or not port.isdigit():
            raise ValueError(f"bad broker {part!r} in Kafka URL {url!r}: use host:port")
        brokers.append(f"{host}:{port}")
    return brokers


def topic_names(prefix: str) -> dict[str, str]:
    """lane -> topic."""
    return {lane: f"{prefix}.{lane}" for lane in LANES}


class KafkaSettings:
    """What both ends need to reach the lanes; filled by `from_config` from the Config fields
    that the --kafka-* options (and PUSHPLAT_KAFKA_* variables) set, and only from those."""

    def __init__(
        self,
        brokers: Sequence[str],
        topic_prefix: str = "pushplat",
        *,
        partitions: int = 6,
        replication: int = 1,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        client_id: str = "pushplat",
        group_id: str = "",
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 0,
        linger_ms: int = 3,
    ) -> None:
        self.brokers = list(brokers)
        self.topic_prefix = topic_prefix
        self.topics = topic_names(topic_prefix)
        self.lane_of_topic = {topic: lane for lane, topic in self.topics.items()}
        self.partitions = partitions
        self.replication = replication
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.client_id = client_id
        self.group_id = group_id or f"{topic_prefix}.routers"
        self.session_timeout_ms = session_timeout_ms
        # Members learn of a rebalance from a heartbeat response, so this bounds how long a
        # joining or leaving router waits for the others; Kafka's usual 3 s by default.
        self.heartbeat_interval_ms = heartbeat_interval_ms or max(500, min(3000, session_timeout_ms // 3))
        # How long a rebalance waits for every member to rejoin (kafka-python's
        # max_poll_interval_ms, 300 s by default); a member that has not polled for this long
        # also leaves the group on its own. Routers poll at least every KEEP_ALIVE_SECONDS, so
        # a router silent for this long is stuck (its loop is) and is better left behind.
        self.rebalance_timeout_ms = max(30_000, 3 * session_timeout_ms)
        self.linger_ms = linger_ms

    @classmethod
    def from_config(cls, config: Config) -> KafkaSettings:
        return cls(
            parse_kafka_url(config.queue),
            config.topic_prefix,
            partitions=config.kafka_partitions,
            replication=config.kafka_replication,
            connect_timeout=config.kafka_connect_timeout_seconds,
            publish_timeout=config.kafka_publish_timeout_seconds,
            client_id=f"pushplat-{config.edge_id or 'node'}",
            group_id=config.kafka_group_id,
            session_timeout_ms=config.kafka_session_timeout_ms,
            heartbeat_interval_ms=config.kafka_heartbeat_interval_ms,
            linger_ms=config.kafka_linger_ms,
        )

    @property
    def where(self) -> str:
        return ",".join(self.brokers)

    @property
    def connect_timeout_ms(self) -> int:
        return max(1, int(self.connect_timeout * 1000))

    def unreachable(self, exc: BaseException) -> QueueUnavailable:
        return QueueUnavailable(f"cannot reach Kafka at {self.where}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name
