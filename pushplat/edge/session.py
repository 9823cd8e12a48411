"""One device's connection: identity, lifetime and a priority-ordered outbound queue."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Iterable

from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.messages import LANES, is_expired, lane_of, now_ms
from pushplat.metrics import DROPPED

GoAwayReason = edge_pb2.GoAway.Reason
IN_FLIGHT_MEMORY = 4096


BATCH_BYTES = 1024 * 1024  # payload bytes per PushBatch frame, at least one message


class OutboundQueue:
    """Frames waiting for the stream. Control frames go first, then high, normal, low messages.

    A slow device builds a backlog here; a high message still overtakes every queued
    normal and low one because each priority has its own deque.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._control: deque[edge_pb2.ServerFrame] = deque()
        self._lanes: dict[str, deque[message_pb2.Message]] = {lane: deque() for lane in LANES}
        self._size = 0
        self._ready = asyncio.Event()
        self._closed = False
        self.expired = 0
        # While held, only control frames go out: the edge is loading the inbox replay,
        # which must reach the device before any message pushed live.
        self._held = False
        self._replay: deque[message_pb2.Message] = deque()

    def __len__(self) -> int:
        return self._size

    def depth(self, lane: str) -> int:
        return len(self._lanes[lane])

    def push(self, message: message_pb2.Message) -> bool:
        """Queue a message; False when the queue is full or closed (the caller counts the drop)."""
        if self._closed or self._size >= self.limit:
            return False
        self._lanes[lane_of(message.priority)].append(message)
        self._size += 1
        self._ready.set()
        return True

    def hold(self) -> None:
        self._held = True

    def release(self, replay: list[message_pb2.Message]) -> None:
        """Queue the inbox replay ahead of everything else, then let messages flow."""
        ids = {m.message_id for m in replay}
        if ids:
            # A message both replayed and pushed live would arrive twice; keep the replay copy.
            for lane in LANES:
                kept = [m for m in self._lanes[lane] if m.message_id not in ids]
                self._size -= len(self._lanes[lane]) - len(kept)
                self._lanes[lane] = deque(kept)
        self._replay.extend(replay)
        self._size += len(replay)
        self._held = False
        self._ready.set()

    def control(self, frame: edge_pb2.ServerFrame) -> None:
        self._control.append(frame)
        self._ready.set()

    def close(self) -> None:
        """Stop taking messages; frames already queued as control still go out."""
        self._closed = True
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def drain_messages(self) -> list[message_pb2.Message]:
        """Everything not yet written, highest priority first (for counting or re-queueing)."""
        left = [*self._replay, *(m for lane in LANES for m in self._lanes[lane])]
        self._replay.clear()
        for lane in LANES:
            self._lanes[lane].clear()
        self._size = 0
        return left

    async def next_frames(self, max_messages: int = 64) -> list[edge_pb2.ServerFrame] | None:
        """Wait for frames to write; None once closed and nothing is left to send."""
        while True:
            frames: list[edge_pb2.ServerFrame] = list(self._control)
            self._control.clear()
            if not self._closed and not self._held:
                batch = self._take_messages(max_messages)
                if batch:
                    frames.append(edge_pb2.ServerFrame(pushes=edge_pb2.PushBatch(messages=batch)))
            if frames:
                return frames
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def _take_messages(self, max_messages: int) -> list[message_pb2.Message]:
        batch: list[message_pb2.Message] = []
        size = 0
        now = now_ms()
        for queue in (self._replay, *(self._lanes[lane] for lane in LANES)):
            # Stay under gRPC's default 4 MiB receive limit: 64 large payloads in one frame would
            # be refused by every client, and the same batch replayed on each reconnect.
            while queue and len(batch) < max_messages and (not batch or size + len(queue[0].payload) <= BATCH_BYTES):
                message = queue.popleft()
                size += len(message.payload)
                self._size -= 1
                if is_expired(message, now):
                    self.expired += 1
                    DROPPED.labels("expired").inc()
                    continue
                batch.append(message)
            if batch:
                # One lane per batch keeps a high batch from waiting on low serialization.
                break
        return batch


class Session:
    def __init__(
        self,
        *,
        session_id: str,
        user_id: str,
        device_id: str,
        edge_id: str,
        queue_limit: int,
        max_age_seconds: float,
        peer: str = "",
        transport: str = "grpc",
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.device_id = device_id
        self.edge_id = edge_id
        self.peer = peer
        self.transport = transport  # "grpc" or "websocket": the metrics' transport label
        self.counted_open = False  # in pushplat_open_connections_by_transport (after _open)
        self.opened_at = time.monotonic()
        self.expires_at = self.opened_at + max_age_seconds
        self.last_seen = self.opened_at
        self.outbound = OutboundQueue(queue_limit)
        self.close_reason = ""
        # Set once a GoAway went out; the session is closed if the client lingers past it.
        self.goaway_deadline: float | None = None
        # Set to end the stream at once, even with a write stuck on a dead peer.
        self.killed = asyncio.Event()
        self.closed_at: float | None = None
        # Set when the client broke the protocol; the stream then ends with INVALID_ARGUMENT.
        self.protocol_error = ""
        # Pushed, not yet acked messages: their labels (for ack receipts) and whether the inbox
        # holds them. Bounded; an ack for an id that fell out counts only if the inbox has it.
        self.in_flight: OrderedDict[str, tuple[dict[str, str], bool]] = OrderedDict()

    def sent(self, messages: Iterable[message_pb2.Message]) -> None:
        for message in messages:
            self.in_flight[message.message_id] = (dict(message.labels), message.requires_ack)
        while len(self.in_flight) > IN_FLIGHT_MEMORY:
            self.in_flight.popitem(last=False)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def go_away(self, reason: int, reconnect_after_ms: int, detail: str, grace_seconds: float) -> None:
        if self.goaway_deadline is not None:
            return
        self.goaway_deadline = time.monotonic() + grace_seconds
        self.close_reason = edge_pb2.GoAway.Reason.Name(reason).lower()
        frame = edge_pb2.GoAway(reason=reason, reconnect_after_ms=reconnect_after_ms, detail=detail)
        self.outbound.control(edge_pb2.ServerFrame(go_away=frame))

    def close(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        self.outbound.close()

    def kill(self, reason: str) -> None:
        self.close(reason)
        self.killed.set()

    @property
    def closed(self) -> bool:
        return self.outbound.closed
