"""The edge's local sessions, one per device. A newer connection for a device replaces the older."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from pushplat.edge.session import Session


class Hub:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        # Every stream still running, including replaced ones that are finishing their GoAway.
        self._streams: set[Session] = set()
        self.empty = asyncio.Event()
        self.empty.set()

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def attach(self, session: Session) -> Session | None:
        """Make session the device's current one; return the session it replaced, if any."""
        old = self._sessions.get(session.device_id)
        self._sessions[session.device_id] = session
        self._streams.add(session)
        self.empty.clear()
        return old if old is not session else None

    def streams(self) -> list[Session]:
        """A snapshot of every running stream (safe to iterate while streams open and close)."""
        return list(self._streams)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def detach(self, session: Session) -> bool:
        """Remove session if it is still the device's current one."""
        self._streams.discard(session)
        if not self._streams:
            self.empty.set()
        if self._sessions.get(session.device_id) is session:
            del self._sessions[session.device_id]
            return True
        return False

    def get(self, device_id: str) -> Session | None:
        return self._sessions.get(device_id)
