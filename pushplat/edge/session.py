"""One device's connection: identity, lifetime and a priority-ordered outbound queue bounded in
messages and in bytes, which it hands to the stream in frames capped in bytes."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from pushplat_client.v1 import edge_pb2, message_pb2

from pushplat.edge.frames import OutFrame, push_batch
from pushplat.messages import is_expired, now_ms
from pushplat.metrics import DROPPED, LIMITS_HIT

if TYPE_CHECKING:
    from pushplat.edge.stream import DeviceStream

GoAwayReason = edge_pb2.GoAway.Reason

# What a queued message costs beyond its serialized size: the upb arena and the Python wrapper
# (measured: a 156-byte message takes about 550 bytes of RSS). Counted in the byte budgets so
# that ten thousand tiny messages are not "free".
MESSAGE_OVERHEAD = 512
# Bytes a PushBatch frame adds around its messages: the ServerFrame field tag and length.
FRAME_OVERHEAD = 6
# Control frames (pongs, subscription answers, GoAway) waiting for a writer. A device that pings
# without reading would otherwise grow this list without end; past the cap its pongs are dropped
# (and counted). A Subscribe waits for room instead (control_room): its answer is awaited.
MAX_CONTROL_FRAMES = 64
# Per-session memory of pushed, unacked ids: what an ack needs to find its message's labels.
IN_FLIGHT_ENTRY_OVERHEAD = 200  # an OrderedDict slot, the id string and the entry tuple (measured)

_LANE_INDEX = {
    message_pb2.PRIORITY_HIGH: 0,
    message_pb2.PRIORITY_NORMAL: 1,
    message_pb2.PRIORITY_UNSPECIFIED: 1,
    message_pb2.PRIORITY_LOW: 2,
}
LANE_NAMES = ("high", "normal", "low")

# The message, its size inside a PushBatch, and its encoding when the caller made one (a topic
# fan-out encodes its message once for every session: edge/frames.py).
_Entry = tuple[message_pb2.Message, int, bytes | None]


class WriterOwner(Protocol):
    def write_loop(self, session: Session) -> Coroutine[None, None, None]: ...


def wire_size(message: message_pb2.Message) -> int:
    """Bytes the message takes inside a PushBatch: field tag, length prefix and the message."""
    return framed_size(message.ByteSize())


def framed_size(size: int) -> int:
    """wire_size of a message whose encoding is ``size`` bytes long."""
    return size + 2 + (size >= 0x80) + (size >= 0x4000) + (size >= 0x200000) + (size >= 0x10000000)


class OutboundQueue:
    """Frames waiting for the stream. Control frames go first, then the inbox replay, then high,
    normal and low messages, each priority in its own deque, so a high message overtakes every
    queued normal and low one. Bounded by ``limit`` messages and ``limit_bytes`` (serialized size
    plus MESSAGE_OVERHEAD per message); a PushBatch is at most ``frame_bytes`` on the wire.

    Idle sessions are the common case, so the deques are made on first use (an empty deque is
    760 bytes), and nothing waits on the queue: it calls on_ready, and the session's writer runs
    only while there is something to write.
    """

    __slots__ = (
        "_bytes",
        "_closed",
        "_control",
        "_held",
        "_lanes",
        "_replay",
        "_room",
        "_size",
        "expired",
        "frame_bytes",
        "full_since",
        "limit",
        "limit_bytes",
        "on_ready",
    )

    def __init__(self, limit: int, limit_bytes: int = 1 << 20, frame_bytes: int = 1 << 20) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.frame_bytes = frame_bytes
        self.expired = 0
        # When the queue first refused a message since it last drained to half its byte budget:
        # the sweeper disconnects a device that stays over budget (a slow consumer).
        self.full_since: float | None = None
        # A list, dropped once written: control frames are few, and an empty deque is 760 bytes.
        self._control: list[OutFrame] | None = None
        self._lanes: list[deque[_Entry] | None] = [None, None, None]
        self._replay: deque[_Entry] | None = None
        self._size = 0
        self._bytes = 0
        # Called when there is something to write and nothing is writing: the session starts
        # its writer then (an idle session holds no writer task at all).
        self.on_ready: Callable[[], None] | None = None
        self._closed = False
        # While held, only control frames go out: the edge is loading the inbox replay,
        # which must reach the device before any message pushed live.
        self._held = False
        # Done when the writer takes the control frames (see control_room); made only when awaited.
        self._room: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def bytes(self) -> int:
        """What the queued messages count against limit_bytes."""
        return self._bytes

    def depth(self, lane: str) -> int:
        queue = self._lanes[LANE_NAMES.index(lane)]
        return len(queue) if queue is not None else 0

    @property
    def frame_room(self) -> int:
        """The largest message (wire size, see wire_size) that fits in a PushBatch frame."""
        return self.frame_bytes - FRAME_OVERHEAD

    def push(self, message: message_pb2.Message, size: int = 0, encoded: bytes | None = None) -> bool:
        """Queue a message of wire ``size`` (computed if 0), and its ``encoded`` bytes if the
        caller has them; False when it does not fit (the caller counts the drop) or the queue is
        closed. An empty queue takes any one message, so nothing is refused for its size alone;
        the caller keeps out what no frame can carry."""
        if self._closed:
            return False
        size = size or wire_size(message)
        if self._size and (self._size >= self.limit or self._bytes + size + MESSAGE_OVERHEAD > self.limit_bytes):
            if self.full_since is None:
                self.full_since = time.monotonic()
            return False
        index = _LANE_INDEX.get(message.priority, 1)
        lane = self._lanes[index]
        if lane is None:
            lane = self._lanes[index] = deque()
        lane.append((message, size, encoded))
        self._size += 1
        self._bytes += size + MESSAGE_OVERHEAD
        self._wake()
        return True

    def hold(self) -> None:
        self._held = True

    def release(self, replay: list[message_pb2.Message]) -> int:
        """Queue the inbox replay ahead of everything else, then let messages flow. Takes the
        oldest that fit the byte budget; returns how many did not (they stay in the inbox)."""
        ids = {m.message_id for m in replay}
        if ids:
            # A message both replayed and pushed live would arrive twice; keep the replay copy.
            for index, lane in enumerate(self._lanes):
                if lane:
                    kept = deque(entry for entry in lane if entry[0].message_id not in ids)
                    for message, size, _ in lane:
                        if message.message_id in ids:
                            self._size -= 1
                            self._bytes -= size + MESSAGE_OVERHEAD
                    self._lanes[index] = kept
        taken = self._take_replay(replay)
        self._held = False
        self._wake()
        return len(replay) - taken

    def catch_up(self, messages: list[message_pb2.Message]) -> int:
        """Queue inbox messages the session had to leave there (ahead of live ones, as a replay
        is); returns how many did not fit."""
        taken = self._take_replay(messages)
        if taken:
            self._wake()
        return len(messages) - taken

    def _take_replay(self, messages: list[message_pb2.Message]) -> int:
        """Queue the oldest messages that fit; returns how many it took or dropped as too large."""
        taken = 0
        for message in messages:
            size = wire_size(message)
            if size > self.frame_room:
                DROPPED.labels("too_large").inc()  # no frame can carry it: it waits out its TTL
                taken += 1
                continue
            if self._size and (self._size >= self.limit or self._bytes + size + MESSAGE_OVERHEAD > self.limit_bytes):
                break
            if self._replay is None:
                self._replay = deque()
            self._replay.append((message, size, None))
            self._size += 1
            self._bytes += size + MESSAGE_OVERHEAD
            taken += 1
        return taken

    def queued_ids(self) -> set[str]:
        """Ids of every message waiting here (for a catch-up to skip)."""
        return {entry[0].message_id for queue in (self._replay, *self._lanes) if queue for entry in queue}

    def control(self, frame: edge_pb2.ServerFrame) -> bool:
        """Queue a control frame; False (counted) when MAX_CONTROL_FRAMES already wait."""
        if self._control is None:
            self._control = [frame]
        elif len(self._control) >= MAX_CONTROL_FRAMES:
            LIMITS_HIT.labels("session_control_frames").inc()
            return False
        else:
            self._control.append(frame)
        self._wake()
        return True

    def control_room(self) -> asyncio.Future[None] | None:
        """None when a control frame fits now; else a future done once the writer has taken the
        queued ones (or the queue closed). A reader awaits it to stop reading a device that asks
        faster than it reads the answers, instead of dropping answers it waits for."""
        if self._control is None or len(self._control) < MAX_CONTROL_FRAMES or self._closed:
            return None
        if self._room is None or self._room.done():
            self._room = asyncio.get_running_loop().create_future()
        return self._room

    def _free_room(self) -> None:
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_result(None)

    def close(self) -> None:
        """Stop taking messages; frames already queued as control still go out."""
        self._closed = True
        self._free_room()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def drain_messages(self) -> list[message_pb2.Message]:
        """Everything not yet written, highest priority first (for counting or re-queueing)."""
        left = [entry[0] for queue in (self._replay, *self._lanes) if queue for entry in queue]
        self._replay = None
        self._lanes = [None, None, None]
        self._size = self._bytes = 0
        return left

    def _wake(self) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def nudge(self) -> None:
        """Have the writer look again (at the inbox, say) with nothing new queued."""
        self._wake()

    def take(self, max_messages: int = 64) -> tuple[list[OutFrame], list[message_pb2.Message]] | None:
        """Frames to write now: control frames, then at most one PushBatch (always last, as
        bytes: edge/frames.py), and the messages in that batch. Both empty when there is nothing
        to write; None once the queue is closed and its control frames are out."""
        frames: list[OutFrame] = []
        batch: list[message_pb2.Message] = []
        if self._control:
            frames = self._control
            self._control = None
            self._free_room()
        if self._size and not self._closed and not self._held:
            batch, encodings = self._take_messages(max_messages)
            if batch:
                frames.append(push_batch(encodings))
        if not frames and self._closed:
            return None
        return frames, batch

    def welcome(self, frame: edge_pb2.ServerFrame) -> None:
        """Put the Welcome in front of every control frame queued before it."""
        self._control = [frame, *(self._control or ())]

    def _take_messages(self, max_messages: int) -> tuple[list[message_pb2.Message], list[bytes]]:
        batch: list[message_pb2.Message] = []
        encodings: list[bytes] = []
        room = self.frame_bytes - FRAME_OVERHEAD
        now = now_ms()
        for queue in (self._replay, *self._lanes):
            # A frame never exceeds frame_bytes (announced in Welcome as max_frame_bytes, and the
            # SDKs' receive limit): a larger one would be refused by the client, and the same
            # batch replayed after every reconnect.
            while queue and len(batch) < max_messages and (not batch or queue[0][1] <= room):
                message, size, encoded = queue.popleft()
                self._size -= 1
                self._bytes -= size + MESSAGE_OVERHEAD
                if is_expired(message, now):
                    self.expired += 1
                    DROPPED.labels("expired").inc()
                    continue
                batch.append(message)
                encodings.append(encoded or message.SerializeToString())
                room -= size
            if batch:
                # One lane per batch keeps a high batch from waiting on low serialization.
                break
        if self.full_since is not None and self._bytes <= self.limit_bytes // 2:
            self.full_since = None
        return batch, encodings


class InFlight:
    """Pushed, not yet acked messages of one session: whether the inbox holds each (so an ack
    removes it there) and its labels (for the ack receipt). Bounded in bytes; the oldest entry goes
    first, and an ack for an id that fell out counts only if the inbox has it."""

    __slots__ = ("_bytes", "_entries", "evicted", "limit_bytes")

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[str, tuple[bool, Mapping[str, str] | None, int]] | None = None
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries) if self._entries else 0

    def __contains__(self, message_id: str) -> bool:
        return bool(self._entries) and message_id in self._entries  # type: ignore[operator]

    @property
    def bytes(self) -> int:
        return self._bytes

    def add(self, messages: Iterable[message_pb2.Message]) -> None:
        entries = self._entries
        if entries is None:
            entries = self._entries = OrderedDict()
        for message in messages:
            labels = message.labels
            # Copy labels only when there are any: most messages carry none, and the map itself
            # would keep the whole message (its payload) alive.
            kept = dict(labels) if labels else None
            cost = IN_FLIGHT_ENTRY_OVERHEAD + len(message.message_id)
            if kept:
                cost += sum(len(k) + len(v) + 100 for k, v in kept.items())
            old = entries.pop(message.message_id, None)
            if old is not None:
                self._bytes -= old[2]
            entries[message.message_id] = (message.requires_ack, kept, cost)
            self._bytes += cost
        while self._bytes > self.limit_bytes and entries:
            _, (_, _, cost) = entries.popitem(last=False)
            self._bytes -= cost
            self.evicted += 1

    def get(self, message_id: str) -> tuple[bool, Mapping[str, str] | None] | None:
        """(in the inbox?, labels) of a pushed message, still remembered; None if unknown."""
        entry = self._entries.get(message_id) if self._entries else None
        return None if entry is None else (entry[0], entry[1])

    def pop(self, message_id: str) -> tuple[bool, Mapping[str, str] | None] | None:
        """(in the inbox?, labels) of a pushed message, forgetting it; None if unknown."""
        if not self._entries:
            return None
        entry = self._entries.pop(message_id, None)
        if entry is None:
            return None
        self._bytes -= entry[2]
        return entry[0], entry[1]


class Session:
    __slots__ = (
        "_killed",
        "behind",
        "catch_up_stalled",
        "close_reason",
        "closed_at",
        "device_id",
        "edge_id",
        "ending",
        "expires_at",
        "goaway_deadline",
        "in_flight",
        "last_seen",
        "opened_at",
        "outbound",
        "owner",
        "peer",
        "pending_acks",
        "protocol_error",
        "session_id",
        "stream",
        "task",
        "transport",
        "user_id",
        "writer",
        "writing",
    )

    def __init__(
        self,
        *,
        session_id: str,
        user_id: str,
        device_id: str,
        edge_id: str,
        queue_limit: int,
        max_age_seconds: float,
        queue_bytes: int = 1 << 20,
        frame_bytes: int = 1 << 20,
        in_flight_bytes: int = 256 * 1024,
        peer: str = "",
        transport: str = "grpc",
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.device_id = device_id
        self.edge_id = edge_id
        self.transport = transport
        self.peer = peer
        self.opened_at = time.monotonic()
        self.expires_at = self.opened_at + max_age_seconds
        self.last_seen = self.opened_at
        self.outbound = OutboundQueue(queue_limit, queue_bytes, frame_bytes)
        self.in_flight = InFlight(in_flight_bytes)
        self.close_reason = ""
        # Set once a GoAway went out; the session is closed if the client lingers past it.
        self.goaway_deadline: float | None = None
        self.closed_at: float | None = None
        # Set when the client broke the protocol; the stream then ends with INVALID_ARGUMENT.
        self.protocol_error = ""
        # True while the device's inbox holds at-least-once messages this session left there
        # (its queue was full, or the replay did not fit): the writer catches up once there is
        # room, and live at-least-once messages wait in the inbox behind them, in order.
        self.behind = False
        # Set when a catch-up found only messages already sent on this session: the next one
        # waits until an ack removes some from the inbox.
        self.catch_up_stalled = False
        # Acked ids read from the stream, not yet processed (see edge/acks.py).
        self.pending_acks: list[str] | None = None
        # What serves the stream (see edge/lifecycle.py): its write_loop() is the writer's body.
        self.owner: WriterOwner | None = None
        self.stream: DeviceStream | None = None
        # The stream's task (reading) while it runs, and whether the session is over: then
        # end_stream() cancels that task's read, even with a write stuck on a dead peer.
        self.task: asyncio.Task[None] | None = None
        self.ending = False
        # The writer task while there is something to write, and whether it is inside a write.
        self.writer: asyncio.Task[None] | None = None
        self.writing = False
        self._killed = False

    def sent(self, messages: Iterable[message_pb2.Message]) -> None:
        self.in_flight.add(messages)

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
        """End the stream now, even with a write stuck on a dead peer."""
        self.close(reason)
        self._killed = True
        self.end_stream()

    def end_stream(self) -> None:
        """The session is over: wake the stream's task out of its read (once)."""
        if self.ending:
            return
        self.ending = True
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # the stream's own code sees `ending` and stops by itself

    def wake(self) -> None:
        """Something is queued: start the writer unless one runs (or the stream is not live)."""
        if self.writer is None and self.task is not None and self.owner is not None:
            self.writer = asyncio.create_task(self.owner.write_loop(self))

    @property
    def killed(self) -> bool:
        return self._killed

    @property
    def closed(self) -> bool:
        return self.outbound.closed
