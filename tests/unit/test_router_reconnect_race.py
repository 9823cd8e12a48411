"""Issue 10, edge kill -9: a device that reconnects to another edge while the router handles
its at-least-once message must still get it, whatever the interleaving.

The router reads the registry (the device is still on dead edge A), the device reconnects to
edge B (B enrolls it, registers it, then reads its inbox for the replay), and only then does the
router carry on. These tests force that reconnect at every await of the router's work on the
message, with the real in-memory registry and inbox. The message must reach B: live, or in the
replay B read. With the inbox written after the lookup (the old order), the reconnect right
after the lookup left it in the inbox until the device's next reconnect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from pushplat.inbox.memory import MemoryInbox
from pushplat.registry import Route
from pushplat.registry.memory import MemoryRegistry
from tests.helpers import eventually
from tests.unit.router_fakes import Edges, Lanes, router, to_device, to_user


class Moment:
    """Runs the reconnect once, right after the `at`-th call (1-based) of the named store method
    returns to the router and before the router sees the result."""

    def __init__(self, at: str, nth: int = 1) -> None:
        self.at, self.nth = at, nth
        self.calls: Counter[str] = Counter()
        self.reconnect = None
        self.replayed: list[str] | None = None

    async def after(self, name: str) -> None:
        self.calls[name] += 1
        if name == self.at and self.calls[name] == self.nth and self.reconnect is not None:
            reconnect, self.reconnect = self.reconnect, None
            self.replayed = await reconnect()


class Registry(MemoryRegistry):
    def __init__(self, moment: Moment) -> None:
        super().__init__()
        self.moment = moment

    async def lookup_devices(self, device_ids: Sequence[str]) -> dict[str, Route]:
        found = await super().lookup_devices(device_ids)
        await self.moment.after("lookup_devices")
        return found

    async def lookup_users(self, user_ids: Sequence[str]) -> dict[str, list[Route]]:
        found = await super().lookup_users(user_ids)
        await self.moment.after("lookup_users")
        return found

    async def edge_addresses(self, edge_ids: Sequence[str]) -> dict[str, str]:
        found = await super().edge_addresses(edge_ids)
        await self.moment.after("edge_addresses")
        return found


class Inbox(MemoryInbox):
    def __init__(self, moment: Moment) -> None:
        super().__init__()
        self.moment = moment

    async def devices_of(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        found = await super().devices_of(user_ids)
        await self.moment.after("devices_of")
        return found

    async def put_many(self, entries):  # type: ignore[no-untyped-def]
        collapsed = await super().put_many(entries)
        await self.moment.after("put_many")
        return collapsed


async def run_race(moment: Moment, target: str, *, enrolled: bool = True) -> tuple[list[str], list[str]]:
    """Device d of user u sits on dead edge A; the moment moves it to edge B. Returns (what B got
    live, what B's replay read)."""
    registry, inbox, edges = Registry(moment), Inbox(moment), Edges()
    edges.dead.add("A")
    for edge in ("A", "B"):
        await registry.set_edge(edge, f"{edge}:1", 60)
    if enrolled:
        await inbox.enroll("u", "d", 3600)
    await registry.register(Route("d", "u", "A", "sA"), 60)

    async def reconnect_to_b() -> list[str]:
        # What edge B does for a Hello: enroll, register, then read the inbox for the replay.
        await inbox.enroll("u", "d", 3600)
        await registry.register(Route("d", "u", "B", "sB"), 60)
        return [m.message_id for m in await inbox.pending("d")]

    moment.reconnect = reconnect_to_b
    lanes = Lanes()
    node = router(lanes, edges, registry, inbox)
    await node.start()
    try:
        lanes.publish(to_device("d", "m") if target == "device" else to_user("u", "m"))
        await eventually(lambda: lanes.committed.get(("normal", 0)) == 1, 5, what="the record to be routed")
    finally:
        await node.stop()
    assert moment.replayed is not None, f"the reconnect never ran: no call {moment.at} #{moment.nth}"
    return edges.delivered["B"], moment.replayed


@pytest.mark.parametrize(
    ("target", "at"),
    [
        ("device", "put_many"),
        ("device", "lookup_devices"),
        ("device", "edge_addresses"),
        ("user", "devices_of"),
        ("user", "put_many"),
        ("user", "lookup_users"),
        ("user", "edge_addresses"),
    ],
)
async def test_a_device_that_moves_at_any_moment_gets_the_message(target, at):
    live, replayed = await run_race(Moment(at), target)
    assert "m" in live or "m" in replayed, f"m reached neither B's stream nor B's replay: {live=} {replayed=}"


@pytest.mark.parametrize(
    ("at", "nth"),
    [("lookup_users", 1), ("put_many", 1), ("lookup_devices", 1), ("edge_addresses", 1)],
)
async def test_a_device_the_router_did_not_know_of_before_the_lookup_gets_it_too(at, nth):
    # d is online but not in the user's enrolled devices when the router reads them (it enrolled
    # later, or the store lost the enrollment): the router stores the message for d after the
    # lookup, so it must look d up once more, after that write, before it acts on the route.
    live, replayed = await run_race(Moment(at, nth), "user", enrolled=False)
    assert "m" in live or "m" in replayed, f"m reached neither B's stream nor B's replay: {live=} {replayed=}"
