"""KafkaLaneConsumer's work-around for a kafka-python rejoin that no poll finishes.

The real-broker proof is benchmarks/kafka_rejoin.py (pairs of routers started under CPU load);
this pins the rule itself: a member left REBALANCING with no rejoin pending is told to rejoin,
and polled until it is STABLE.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kafka.errors as kafka_errors
import pytest
from kafka.structs import MemberState, TopicPartition

from pushplat.queue.kafka.consumer import KafkaLaneConsumer
from pushplat.queue.kafka.settings import KafkaSettings
from pushplat.v1 import delivery_pb2


class WedgedCoordinator:
    """kafka-python's state after a metadata-triggered join whose answer came between polls."""

    def __init__(self) -> None:
        self.state = MemberState.REBALANCING
        self.rejoin_needed = False
        self.requests = 0

    def need_rejoin(self) -> bool:
        return self.rejoin_needed

    def request_rejoin(self) -> None:
        self.requests += 1
        self.rejoin_needed = True


class FakeConsumer:
    def __init__(self, coordinator: WedgedCoordinator) -> None:
        self._coordinator = coordinator
        self.polls = 0

    def group_metadata(self) -> Any:
        return self._coordinator

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        self.polls += 1
        # As kafka-python does: a poll with a rejoin pending finishes the join in flight.
        if self._coordinator.rejoin_needed:
            self._coordinator.rejoin_needed = False
            self._coordinator.state = MemberState.STABLE
        return {}

    def assignment(self) -> set[Any]:
        return set()

    def paused(self) -> set[Any]:
        return set()


def test_a_member_left_rebalancing_without_a_pending_rejoin_is_told_to_rejoin() -> None:
    consumer = KafkaLaneConsumer(KafkaSettings(["127.0.0.1:9"], session_timeout_ms=2_000))
    coordinator = WedgedCoordinator()
    fake = FakeConsumer(coordinator)
    assert consumer._poll(fake, frozenset({"high"}), 10, 0.0) == []  # type: ignore[arg-type]
    assert coordinator.requests == 1
    assert coordinator.state == MemberState.STABLE
    assert fake.polls == 2  # the one that finished the join, then the fetch itself


def test_a_stable_member_is_left_alone() -> None:
    consumer = KafkaLaneConsumer(KafkaSettings(["127.0.0.1:9"], session_timeout_ms=2_000))
    coordinator = WedgedCoordinator()
    coordinator.state = MemberState.STABLE
    fake = FakeConsumer(coordinator)
    consumer._poll(fake, frozenset({"high"}), 10, 0.0)  # type: ignore[arg-type]
    assert coordinator.requests == 0 and fake.polls == 1


class RebalancingAfterFetch(FakeConsumer):
    """The fetch poll returns records and starts a rejoin; the rejoin's poll then fails."""

    def __init__(self, coordinator: WedgedCoordinator, batches: dict[TopicPartition, list[Any]]) -> None:
        super().__init__(coordinator)
        self.batches = batches
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.assigned = set(batches)

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        self.polls += 1
        if self.polls == 1:
            self._coordinator.state = MemberState.REBALANCING
            return self.batches
        raise kafka_errors.KafkaConnectionError("coordinator went away")

    def assignment(self) -> set[Any]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def pause(self, *partitions: TopicPartition) -> None:
        pass


def test_records_fetched_before_a_failed_rejoin_are_rewound_not_lost() -> None:
    settings = KafkaSettings(["127.0.0.1:9"], "t", session_timeout_ms=2_000)
    consumer = KafkaLaneConsumer(settings)
    coordinator = WedgedCoordinator()
    coordinator.state = MemberState.STABLE
    tp = TopicPartition(settings.topics["high"], 0)
    value = delivery_pb2.Envelope().SerializeToString()
    fake = RebalancingAfterFetch(coordinator, {tp: [SimpleNamespace(offset=5, value=value)]})
    with pytest.raises(kafka_errors.KafkaConnectionError):
        consumer._poll(fake, frozenset({"high"}), 10, 0.0)  # type: ignore[arg-type]
    # Never returned, so read again from where they started.
    assert fake.seeks == [(tp, 5)]
