"""The fault suite's traffic and its accounting, as an application sees it.

A Fleet is DEVICES devices on the Python SDK (device d<i> of user u<i>), each knowing every
edge, so that one whose edge dies reconnects to another. `traffic` sends at-least-once messages
at RATE per second for a while (each Send its own task, so a slow Send does not slow the rate),
runs the fault at its moment, and records what each Send answered. `settle` then waits, bounded,
until every accepted message has reached its device's app, and counts:

- accepted: Sends that returned a message id;
- unavailable: Sends that answered UNAVAILABLE (not accepted; the sender would retry);
- received: distinct accepted messages that reached the app of their device;
- lost: accepted messages that did not arrive within the settle time;
- dup: messages the app was given more than once (the SDK drops duplicates by message_id);
- stray: messages that arrived although their Send failed (not an error: a Send can fail after
  the message was enqueued, e.g. when the answer is lost).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from pushplat_client import Backoff, PushClient, PushError, PushSender
from pushplat_client.v1 import push_pb2

from pushplat.inbox import Inbox
from tests.helpers import eventually

RATE = 40.0  # messages per second, as in the runs
DEVICES = 20
CONCURRENT_SENDS = 200  # bounded: a stalled api cannot make the test open sends without end


class Fleet:
    """The devices and what their apps were given, in arrival order (with receive times)."""

    def __init__(self, edges: list[str], count: int = DEVICES, prefix: str = "d") -> None:
        self.names = [f"{prefix}{i}" for i in range(count)]
        self.user_of = {name: f"u{name}" for name in self.names}
        self.clients = {
            name: PushClient(
                edges,
                user_id=self.user_of[name],
                device_id=name,
                backoff=Backoff(base=0.05, cap=0.5),
                heartbeat_interval=1.0,
            )
            for name in self.names
        }
        self.seen: defaultdict[str, list[str]] = defaultdict(list)
        self.received_at: dict[str, float] = {}
        self.arrived = asyncio.Event()  # set on every message an app is given
        self._pumps: list[asyncio.Task[None]] = []

    async def connect(self, timeout: float = 30) -> None:
        for client in self.clients.values():
            await client.__aenter__()
        await asyncio.gather(*(c.wait_connected(timeout=timeout) for c in self.clients.values()))
        self._pumps = [asyncio.create_task(self._pump(name)) for name in self.names]

    async def _pump(self, name: str) -> None:
        async for message in self.clients[name]:
            payload = message.payload.decode()
            self.seen[name].append(payload)
            self.received_at.setdefault(payload, time.monotonic())
            self.arrived.set()

    def on_edge(self, edge_id: str) -> list[str]:
        return [n for n, c in self.clients.items() if c.connected and c.edge_id == edge_id]

    async def close(self) -> None:
        for task in self._pumps:
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)


async def warm_up(fleet: Fleet, sender: PushSender, timeout: float = 90) -> None:
    """One message per device, until each arrived: every router has joined its consumer group and
    every device's partition is served. Probes are not counted."""
    for name in fleet.names:
        await sender.send(device_id=name, payload=f"probe-{name}", at_least_once=True)
    await eventually(
        lambda: all(f"probe-{n}" in fleet.seen[n] for n in fleet.names), timeout, what="a probe on every device"
    )


@dataclass
class Tally:
    accepted: dict[str, str] = field(default_factory=dict)  # payload -> device
    unavailable: dict[str, str] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)  # other status codes
    sent_at: dict[str, float] = field(default_factory=dict)
    message_ids: dict[str, str] = field(default_factory=dict)  # payload -> message id


async def traffic(
    sender: PushSender,
    fleet: Fleet,
    seconds: float,
    *,
    tally: Tally | None = None,
    devices: list[str] | None = None,
    to_users: bool = True,
    fault: Callable[[], Awaitable[object]] | None = None,
    fault_at: float = 0.0,
    rate: float = RATE,
    tag: str = "m",
) -> Tally:
    """Send at `rate` for `seconds`, round robin over the devices, alternately to the device id
    and (to_users) to its user; the fault runs (awaited before this returns) at `fault_at`."""
    tally = tally or Tally()
    devices = devices or fleet.names
    gate = asyncio.Semaphore(CONCURRENT_SENDS)
    sends: list[asyncio.Task[None]] = []
    first = len(tally.sent_at)

    async def send(i: int) -> None:
        device = devices[i % len(devices)]
        payload = f"{tag}{first + i}"
        target = {"user_id": fleet.user_of[device]} if to_users and i % 2 else {"device_id": device}
        async with gate:
            tally.sent_at[payload] = time.monotonic()
            try:
                reply = await sender.send(**target, payload=payload, at_least_once=True, timeout=15)
            except PushError as exc:
                if exc.code == grpc.StatusCode.UNAVAILABLE:
                    tally.unavailable[payload] = device
                else:
                    tally.failed[exc.code.name] += 1
                return
            tally.accepted[payload] = device
            tally.message_ids[payload] = reply.message_id

    started = time.monotonic()
    fault_task = None
    count = int(seconds * rate)
    for i in range(count):
        if fault is not None and fault_task is None and i >= fault_at * rate:
            fault_task = asyncio.create_task(fault())
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)  # the send schedule itself
        sends.append(asyncio.create_task(send(i)))
    await asyncio.gather(*sends)
    if fault_task is not None:
        await fault_task
    return tally


@dataclass
class Counts:
    accepted: int
    unavailable: int
    received: int
    lost: int
    dup: int
    stray: int
    failed: dict[str, int]
    settle_seconds: float
    lost_ids: list[str]

    def line(self, name: str) -> str:
        failed = f" other_errors={self.failed}" if self.failed else ""
        return (
            f"fault suite: {name}: accepted={self.accepted} UNAVAILABLE={self.unavailable} received={self.received} "
            f"lost={self.lost} dup={self.dup} stray={self.stray}{failed} settled_in={self.settle_seconds:.1f}s"
        )


async def settle(name: str, tally: Tally, fleet: Fleet, timeout: float = 45) -> Counts:
    """Wait (at most timeout) until every accepted message reached its device's app; count."""
    started = time.monotonic()

    def missing() -> list[str]:
        return [p for p, device in tally.accepted.items() if p not in set(fleet.seen[device])]

    deadline = started + timeout
    while missing() and (left := deadline - time.monotonic()) > 0:
        fleet.arrived.clear()
        try:
            await asyncio.wait_for(fleet.arrived.wait(), left)
        except TimeoutError:
            break
    lost = missing()
    seen_tagged = {p for device in fleet.names for p in fleet.seen[device] if p in tally.sent_at}
    counts = Counts(
        accepted=len(tally.accepted),
        unavailable=len(tally.unavailable),
        received=len(tally.accepted) - len(lost),
        lost=len(lost),
        dup=sum(
            n - 1
            for device in fleet.names
            for p, n in Counter(fleet.seen[device]).items()
            if n > 1 and p in tally.sent_at
        ),
        stray=len(seen_tagged - set(tally.accepted)),
        failed=dict(tally.failed),
        settle_seconds=time.monotonic() - started,
        lost_ids=sorted(lost)[:20],
    )
    print(counts.line(name), flush=True)
    return counts


async def explain_losses(counts: Counts, tally: Tally, inbox: Inbox, sender: PushSender) -> None:
    """Where did each lost message go? Whether its device's inbox still holds it, and the last
    state the platform recorded for it on each device (which edge, what happened)."""
    for payload in counts.lost_ids:
        device = tally.accepted[payload]
        held = {m.payload.decode() for m in await inbox.pending(device)}
        status = await sender.get_status(tally.message_ids[payload])
        states = "; ".join(
            f"{d.device_id}: {push_pb2.DeliveryState.Name(d.state)} edge={d.edge_id or '-'} ({d.detail})"
            for d in status.devices
        )
        print(
            f"  lost {payload} for {device}: {'still in its inbox' if payload in held else 'not in its inbox'}; "
            f"status {push_pb2.DeliveryState.Name(status.state)}: {states or 'no device state'}",
            flush=True,
        )


def assert_clean(counts: Counts, *, min_accepted: int) -> None:
    """0 lost and 0 duplicates for every accepted message, and enough traffic to mean something."""
    assert counts.accepted >= min_accepted, f"too little traffic was accepted: {counts}"
    assert not counts.failed, f"Sends failed with unexpected codes: {counts.failed}"
    assert counts.lost == 0, f"{counts.lost} accepted messages never arrived, e.g. {counts.lost_ids}"
    assert counts.dup == 0, f"the apps were given {counts.dup} duplicates"
