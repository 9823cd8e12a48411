"""KafkaLaneConsumer's work-around for a kafka-python rejoin that no poll finishes.

The real-broker proof is benchmarks/kafka_rejoin.py (pairs of routers started under CPU load);
this pins the rule itself: a member left REBALANCING with no rejoin pending is told to rejoin,
and polled until it is STABLE.
"""

from __future__ import annotations

from typing import Any

from kafka.structs import MemberState

from pushplat.queue.kafka.consumer import KafkaLaneConsumer
from pushplat.queue.kafka.settings import KafkaSettings


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
