"""Acks, read in bulk off every session and processed by one task per edge.

A session's reader only checks an Ack frame's size and appends its ids to the session; this
task then resolves them against the session's in-flight map (an ack counts only for a message
pushed on that session or waiting in the device's inbox), removes the at-least-once ones from
the inbox in one call per round for all devices, and emits the ACKED receipts once per round.
Nothing on the read path awaits the inbox or the receipts, and work is done in chunks of
ACK_CHUNK ids with a yield between them, so a 1,000-id frame never holds the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pushplat.edge.session import Session
from pushplat.edge.topics import EdgeTopics
from pushplat.inbox import Inbox
from pushplat.limits import MAX_ACK_BACKLOG, MAX_ID_BYTES
from pushplat.logs import kv
from pushplat.metrics import ACKS, LIMITS_HIT
from pushplat.receipts import Receipts, State, receipt

log = logging.getLogger("pushplat.edge")

# Ids resolved between two yields to the event loop (and per inbox call and receipt batch).
ACK_CHUNK = 256


class AckProcessor:
    def __init__(self, inbox: Inbox, receipts: Receipts, topics: EdgeTopics | None = None) -> None:
        self.topics = topics
        self.inbox = inbox
        self.receipts = receipts
        # Sessions with unprocessed acks, oldest first (a dict as an ordered set).
        self._queue: dict[Session, None] = {}
        self._wakeup: asyncio.Future[None] | None = None
        # Readers waiting for their session's backlog to be processed.
        self._waiters: dict[Session, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ack-processor")

    async def stop(self) -> None:
        """Process what is queued, then stop."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        while self._queue:
            await self._round()
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def add(self, session: Session, message_ids: Sequence[str]) -> bool:
        """Queue a session's acked ids. True when its backlog is over MAX_ACK_BACKLOG: the reader
        should then wait (``await drained(session)``) before reading on."""
        pending = session.pending_acks
        if pending is None:
            pending = session.pending_acks = []
        pending.extend(message_ids)
        self._queue[session] = None
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return len(pending) > MAX_ACK_BACKLOG

    async def drained(self, session: Session) -> None:
        """Wait until the session's queued acks are processed (backpressure on that one stream)."""
        LIMITS_HIT.labels("ack_backlog").inc()
        if session.pending_acks is None or self._task is None:
            return
        waiter = self._waiters.get(session)
        if waiter is None:
            waiter = self._waiters[session] = asyncio.get_running_loop().create_future()
        await waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep processing: one bad round must not stop every ack
                log.warning(kv("acks.round_failed", error=repr(exc)))

    async def _round(self) -> None:
        """Process every session queued now, ACK_CHUNK ids at a time."""
        while self._queue:
            batch: list[tuple[Session, list[str]]] = []
            taken = 0
            while self._queue and taken < ACK_CHUNK:
                session = next(iter(self._queue))
                pending = session.pending_acks or []
                chunk, rest = pending[: ACK_CHUNK - taken], pending[ACK_CHUNK - taken :]
                session.pending_acks = rest or None
                del self._queue[session]
                if rest:
                    self._queue[session] = None  # to the back: one busy stream never starves the rest
                batch.append((session, chunk))
                taken += len(chunk)
            await self._process(batch)
            for session, _ in batch:
                if session.pending_acks is None:
                    waiter = self._waiters.pop(session, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
            await asyncio.sleep(0)

    async def _process(self, batch: list[tuple[Session, list[str]]]) -> None:
        acked: list[tuple[Session, str, object]] = []
        lookups: list[tuple[Session, list[str], set[str]]] = []  # ids that may be in the inbox
        claimed: set[tuple[int, str]] = set()  # a session may come twice in one batch
        for session, ids in batch:
            stored: list[str] = []
            pushed: set[str] = set()
            for mid in dict.fromkeys(ids):
                # Forgotten only once the inbox has it acked (below): until then a catch-up or a
                # registry heal reading the inbox must still see it as sent, or pushes it again.
                entry = session.in_flight.get(mid)
                if entry is not None and (key := (id(session), mid)) not in claimed:
                    claimed.add(key)
                    pushed.add(mid)
                    acked.append((session, mid, entry[1]))
                    if entry[0]:  # at-least-once: in the inbox too
                        stored.append(mid)
                elif entry is None and 0 < len(mid) <= MAX_ID_BYTES:
                    stored.append(mid)  # not pushed on this session; counts only if the inbox had it
            if stored:
                lookups.append((session, stored, pushed))
        if lookups:
            try:
                removed = await self.inbox.ack_many([(s.device_id, ids) for s, ids, _ in lookups])
            except Exception as exc:
                # The entries stay and are replayed later; the SDK drops the duplicates.
                log.warning(kv("inbox.ack_failed", devices=len(lookups), error=repr(exc)))
                removed = [[] for _ in lookups]
            for (session, _, pushed), gone in zip(lookups, removed, strict=True):
                acked.extend((session, mid, None) for mid in gone if mid not in pushed)
                if gone and session.catch_up_stalled:
                    session.catch_up_stalled = False  # room in the inbox's oldest page: look again
                    session.outbound.nudge()
        for session, mid, _ in acked:
            session.in_flight.pop(mid)
        if not acked:
            return
        ACKS.inc(len(acked))
        if self.topics is not None:
            # A topic message's acks are counted, not kept per device (edge/topics.py).
            acked = self.topics.count_acks(acked)
        # Buffered, never awaited: the receipts' backend is off the ack path.
        self.receipts.record(
            receipt(
                mid,
                State.DELIVERY_STATE_ACKED,
                device_id=session.device_id,
                user_id=session.user_id,
                edge_id=session.edge_id,
                labels=labels,  # type: ignore[arg-type]
            )
            for session, mid, labels in acked
        )
