"""The router role: consume the priority lanes, look targets up, hand deliveries to edges.

One loop fetches from the lanes (high first, see LaneScheduler) and routes one batch at a time:
it stores at-least-once messages in their inboxes, looks the targets up, and appends each
delivery to the queue of its edge (router/edges.py), which sends it on its own. So the loop
never waits for an edge, and a slow or dead edge delays only its own devices. A record is done
once all its deliveries are settled; a committer task commits each partition up to its lowest
record not yet done (router/commits.py).

Inbox first, lookup second. The write comes before the registry lookup whose route it acts
on, so a device that reconnects elsewhere meanwhile cannot miss the message: either the
lookup already sees its new session (and the message goes there), or the lookup ran before
that session registered, and so before the new edge read the inbox to replay it, which then
finds the entry. Writing after the lookup left a window in which the message went to the dead
edge and waited in the inbox for the device's next reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from pushplat_client.v1 import message_pb2

from pushplat.config import Config
from pushplat.edge_link import EdgeLink
from pushplat.inbox import Inbox
from pushplat.logs import kv
from pushplat.messages import LANES, now_ms
from pushplat.metrics import DROPPED, LANE_LAG, LIMITS_HIT, ROUTER_IN_FLIGHT
from pushplat.queue import LaneConsumer
from pushplat.receipts import ReceiptEvent, Receipts, State, receipt
from pushplat.registry import Registry, Route
from pushplat.router.commits import CommitTracker, Entry
from pushplat.router.edges import Delivery, EdgeLimits, EdgeQueues
from pushplat.router.scheduler import LaneScheduler
from pushplat.router.topics import TopicRouting
from pushplat.waits import wait_event

log = logging.getLogger("pushplat.router")

__all__ = ["RouterNode"]

# How long a router reuses an edge's address from the registry before reading it again.
ADDRESS_CACHE_SECONDS = 1.0

# Metric children, resolved once rather than per message.
_LANE_LAG = {lane: LANE_LAG.labels(lane) for lane in LANES}
_DROPPED_EXPIRED = DROPPED.labels("expired")
_DROPPED_NO_ROUTE = DROPPED.labels("no_route")
_LIMIT_IN_FLIGHT = LIMITS_HIT.labels("router_in_flight")
# Enum values resolved once: attribute lookups on the protobuf enum wrappers are slow.
EXPIRED, NO_ROUTE = State.DELIVERY_STATE_EXPIRED, State.DELIVERY_STATE_NO_ROUTE
COLLAPSED = State.DELIVERY_STATE_DROPPED


class RouterNode:
    def __init__(
        self,
        config: Config,
        registry: Registry,
        consumer: LaneConsumer,
        inbox: Inbox,
        receipts: Receipts,
        link: EdgeLink,
    ) -> None:
        self.config = config
        self.registry = registry
        self.inbox = inbox
        self.receipts = receipts
        self.consumer = consumer
        self.scheduler: LaneScheduler[Entry] = LaneScheduler(buffer_limit=max(2 * config.router_batch_size, 64))
        self.tracker = CommitTracker()
        self.link = link
        self.topics = TopicRouting(registry)
        self.queues = EdgeQueues(
            link,
            EdgeLimits(
                queue_messages=config.edge_queue_messages,
                queue_bytes=config.edge_queue_bytes,
                batch_size=config.router_batch_size,
                deliver_timeout=config.deliver_timeout_seconds,
                breaker_failures=config.edge_breaker_failures,
                breaker_open_seconds=config.edge_breaker_open_seconds,
            ),
            self.tracker,
            receipts.emit,
        )
        self.max_in_flight = max(config.router_max_in_flight, config.router_batch_size)
        self._addresses: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self.poll_timeout = 0.5

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="router")
        self._committer = asyncio.create_task(self._commit_loop(), name="router-commits")

    async def pause(self) -> None:
        """Stop taking from the lanes (operators: hold delivery during maintenance; tests: build a
        backlog). What was already routed still goes out."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def resume(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router")

    async def stop(self) -> None:
        await self.pause()
        # Let what is already on its way settle (bounded), so that it is committed.
        deadline = time.monotonic() + self.config.deliver_timeout_seconds + 1.0
        while self.tracker.open and (left := deadline - time.monotonic()) > 0:
            self.tracker.released.clear()
            if not await wait_event(self.tracker.released, left):
                break
        await self.queues.close()
        if self._committer:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
        await self._commit()
        await self.consumer.close()

    # -- the routing loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        at_cap = False
        batch_size = self.config.router_batch_size
        while True:
            # Fetching may pause for a while below; the consumer's group membership may not.
            await self.consumer.keep_alive()
            room = self.max_in_flight - self.tracker.size
            ROUTER_IN_FLIGHT.set(self.tracker.size)
            if room <= 0 and not self.scheduler.buffered():
                # Too many records between fetch and commit (a slow edge holds a partition's
                # commit back): stop fetching until some are committed.
                if not at_cap:
                    at_cap = True
                    _LIMIT_IN_FLIGHT.inc()
                    log.warning(kv("router.in_flight_limit", records=self.tracker.size, limit=self.max_in_flight))
                self.tracker.released.clear()
                await wait_event(self.tracker.released, self.poll_timeout)
                continue
            at_cap = False
            hungry = self.scheduler.hungry_lanes() if room > 0 else []
            if hungry:
                timeout = 0.0 if self.scheduler.buffered() else self.poll_timeout
                try:
                    records = await self.consumer.fetch(hungry, min(batch_size, room), timeout)
                except Exception as exc:
                    failures += 1
                    log.warning(kv("router.fetch_failed", error=repr(exc), attempt=failures))
                    await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                    continue
                if records:
                    self.scheduler.add(self.tracker.track(records))
            batch = self.scheduler.take(batch_size)
            if not batch:
                continue
            try:
                events = await self.route(batch)
            except asyncio.CancelledError:
                self.scheduler.put_back(batch)  # paused mid-batch: nothing of it went out
                raise
            except Exception as exc:
                # Keep the batch and retry: a registry blip must not lose messages.
                failures += 1
                log.warning(kv("router.route_failed", error=repr(exc), records=len(batch), attempt=failures))
                self.scheduler.put_back(batch)
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            failures = 0
            if events:
                self.receipts.record(events)
            # In process nothing above may have yielded: let the edge queues send this batch
            # before the next one is routed.
            await asyncio.sleep(0)

    async def route(self, batch: list[Entry]) -> list[ReceiptEvent]:
        """Store at-least-once messages in their inboxes, look the targets up, and queue each
        delivery on its edge. Returns the receipts of what was settled here. Nothing is settled or
        queued before the last await, so a failed or cancelled attempt can simply be repeated."""
        now = now_ms()
        events: list[ReceiptEvent] = []
        # Collapses go last: a message collapsed by a later one in this same batch must end
        # DROPPED, not be overwritten by its own "kept in inbox" receipt from step 5.
        collapses: list[ReceiptEvent] = []
        finished: list[Entry] = []
        live: list[tuple[Entry, str, str, message_pb2.Message]] = []  # entry, kind, target id, message
        topical: list[Entry] = []  # topic messages and control records (router/topics.py)
        newest: dict[str, int] = {}
        for entry in batch:
            envelope = entry.record.envelope  # type: ignore[union-attr]
            message = envelope.message
            if message.expires_at_ms and message.expires_at_ms <= now:
                _DROPPED_EXPIRED.inc()
                events.append(
                    receipt(
                        message.message_id,
                        EXPIRED,
                        labels=message.labels,
                        detail="expired before routing",
                    )
                )
                finished.append(entry)
                continue
            kind = envelope.WhichOneof("target") or ""
            if kind == "topic" or envelope.HasField("topic_change"):
                topical.append(entry)
                continue
            live.append((entry, kind, getattr(envelope, kind) if kind else "", message))
            newest[entry.lane] = message.created_at_ms
        for lane, created in newest.items():
            _LANE_LAG[lane].set(max(now - created, 0) / 1000)

        device_ids = {target for _, kind, target, _ in live if kind == "device_id"}
        user_ids = {target for _, kind, target, _ in live if kind == "user_id"}
        lasting_users = sorted({t for _, kind, t, m in live if kind == "user_id" and m.requires_ack})

        # 1. Whom each at-least-once user message is stored for: the user's enrolled devices.
        known = await self.inbox.devices_of(lasting_users) if lasting_users else {}
        # 2. The inbox write, in one round trip, before the lookups (see the module doc).
        to_store: list[tuple[Sequence[str], message_pb2.Message]] = []
        for _, kind, target, message in live:
            if message.requires_ack:
                devices = [target] if kind == "device_id" else known.get(target)
                if devices:
                    to_store.append((devices, message))
        if to_store:
            collapses += _collapse_receipts(await self.inbox.put_many(to_store))
        # 3. The lookups (and the live edges, for topics).
        device_routes, user_routes, topic_plan = await asyncio.gather(
            self.registry.lookup_devices(sorted(device_ids)) if device_ids else _empty(),
            self.registry.lookup_users(sorted(user_ids)) if user_ids else _empty(),
            self.topics.plan(topical) if topical else _none(),
        )
        # 4. Connected devices of an at-least-once user message that step 2 did not store for
        # (enrolled since step 1): store for them too, and act only on a route read after that.
        stored = {user: set(devices) for user, devices in known.items()}
        late = {
            user: [r.device_id for r in user_routes.get(user, ()) if r.device_id not in stored[user]]
            for user in lasting_users
        }
        late = {user: devices for user, devices in late.items() if devices}
        if late:
            user_routes = await self._store_late(live, late, user_routes, stored, collapses)

        # 5. One delivery per route, grouped by edge.
        per_edge: dict[str, list[Delivery]] = defaultdict(list)
        plans: list[tuple[Entry, int]] = []
        for entry, kind, target, message in live:
            routes: Iterable[Route]
            if kind == "device_id":
                route = device_routes.get(target)
                routes = (route,) if route else ()
                offline = [target] if not route and message.requires_ack else []
            elif kind == "user_id":
                routes = user_routes.get(target, ())
                if message.requires_ack:
                    online = {r.device_id for r in routes}
                    offline = [d for d in stored.get(target, ()) if d not in online]
                else:
                    offline = []  # at-most-once keeps nothing for them: no route is a counted drop
            else:
                routes, offline = (), []
            for device_id in offline:
                events.append(
                    receipt(
                        message.message_id,
                        NO_ROUTE,
                        device_id=device_id,
                        labels=message.labels,
                        detail="offline; kept in inbox",
                    )
                )
            count = 0
            size = message.ByteSize() if routes else 0
            for route in routes:
                per_edge[route.edge_id].append(
                    Delivery(entry.lane, route.device_id, route.session_id, message, entry, size=size)
                )
                count += 1
            if count:
                plans.append((entry, count))
                continue
            finished.append(entry)
            if not offline:
                _DROPPED_NO_ROUTE.inc()
                events.append(
                    receipt(
                        message.message_id,
                        NO_ROUTE,
                        labels=message.labels,
                        detail="no connected device",
                        **({kind: target} if kind else {}),
                    )
                )
        if topic_plan is not None:
            for edge_id, items in topic_plan.per_edge.items():
                per_edge[edge_id].extend(items)
            plans += topic_plan.plans
            finished += topic_plan.finished
            events += topic_plan.events
        known = topic_plan.addresses if topic_plan is not None else {}
        addresses = await self._edge_addresses(per_edge, known) if per_edge else {}

        # -- no await below this line: each entry settles, or goes to its edges, exactly once.
        for entry in finished:
            self.tracker.finish(entry)
        for entry, count in plans:
            self.tracker.expect(entry, count)
        if per_edge:
            events += self.queues.dispatch(per_edge, addresses)
        return events + collapses

    async def _store_late(
        self,
        live: list[tuple[Entry, str, str, message_pb2.Message]],
        late: dict[str, list[str]],
        user_routes: dict[str, list[Route]],
        stored: dict[str, set[str]],
        collapses: list[ReceiptEvent],
    ) -> dict[str, list[Route]]:
        to_store = [
            (late[target], message)
            for _, kind, target, message in live
            if kind == "user_id" and message.requires_ack and target in late
        ]
        collapses += _collapse_receipts(await self.inbox.put_many(to_store))
        fresh = await self.registry.lookup_devices(sorted({d for devices in late.values() for d in devices}))
        routes = dict(user_routes)
        for user, devices in late.items():
            kept = [r for r in user_routes.get(user, ()) if r.device_id in stored[user]]
            kept += [fresh[d] for d in devices if d in fresh and fresh[d].user_id == user]
            routes[user] = kept
            stored[user].update(devices)  # now in the inbox: offline if the fresh lookup missed them
        return routes

    async def _edge_addresses(self, edge_ids: Iterable[str], known: Mapping[str, str]) -> dict[str, str]:
        """Each edge's delivery address: from `known` (the live-edge list topics read), the
        cache, or one registry read for the rest."""
        now = time.monotonic()
        found: dict[str, str] = {}
        missing = []
        for edge_id in edge_ids:
            if edge_id in known:
                found[edge_id] = known[edge_id]
                continue
            cached = self._addresses.get(edge_id)
            if cached is not None and cached[1] > now:
                found[edge_id] = cached[0]
            else:
                missing.append(edge_id)
        if missing:
            fetched = await self.registry.edge_addresses(missing)
            if len(self._addresses) > 4 * len(self.queues.queues) + 1024:
                self._addresses.clear()  # bounded: departed edges' entries go
            for edge_id, address in fetched.items():
                self._addresses[edge_id] = (address, now + ADDRESS_CACHE_SECONDS)
            found.update(fetched)
        return found

    # -- commits --------------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self.tracker.progress.wait()
            self.tracker.progress.clear()
            ROUTER_IN_FLIGHT.set(self.tracker.size)
            if not await self._commit():
                await asyncio.sleep(1.0)

    async def _commit(self) -> bool:
        markers = self.tracker.committable()
        if not markers:
            return True
        try:
            await self.consumer.commit(markers)
        except Exception as exc:
            # Commits are cumulative: the next one covers these positions too.
            self.tracker.requeue(markers)
            self.tracker.progress.set()
            log.warning(kv("router.commit_failed", error=repr(exc), partitions=len(markers)))
            return False
        return True


def _collapse_receipts(collapsed: Iterable) -> list[ReceiptEvent]:
    return [
        receipt(c.message_id, COLLAPSED, device_id=c.device_id, detail=f"collapsed by {c.replaced_by}")
        for c in collapsed
    ]


async def _empty() -> dict:
    return {}


async def _none() -> None:
    return None
