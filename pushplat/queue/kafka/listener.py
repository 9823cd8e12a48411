"""The consumer group's rebalance listener: runs on kafka-python's IO thread."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from kafka import ConsumerRebalanceListener
from kafka.structs import TopicPartition

from pushplat.logs import kv

if TYPE_CHECKING:
    from pushplat.queue.kafka.consumer import KafkaLaneConsumer

log = logging.getLogger("pushplat.queue.kafka")


class RebalanceListener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: only records what changed, never calls the consumer."""

    def __init__(self, owner: KafkaLaneConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._owner._forget(revoked, "revoked")

    def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        self._owner._forget(lost, "lost")

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        log.info(kv("kafka.partitions_assigned", group=self._owner.settings.group_id, partitions=",".join(partitions)))
