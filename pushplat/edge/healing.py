"""InboxRecheck: what an edge does for sessions whose registry entries the store had lost.

The registration handler re-creates the entries (registration.py). Messages routed while they
were missing found no route: at-least-once ones went only to the device's inbox. So for each
healed session this binds the device to its user again (the inbox's enrollment was lost with
the rest) and pushes what its inbox holds that this session has not been pushed yet. A message
that is also still queued on the session arrives twice; the SDKs drop the second copy.
"""

from __future__ import annotations

import asyncio
import logging

from pushplat.edge.session import Session
from pushplat.inbox import Inbox
from pushplat.logs import kv

log = logging.getLogger("pushplat.edge")

# Sessions re-checked at once (each is a few inbox round trips).
CONCURRENCY = 64


class InboxRecheck:
    def __init__(self, inbox: Inbox, device_memory_seconds: float) -> None:
        self.inbox = inbox
        self.device_memory_seconds = device_memory_seconds

    async def __call__(self, sessions: list[Session]) -> None:
        replayed = 0
        for i in range(0, len(sessions), CONCURRENCY):
            results = await asyncio.gather(
                *(self._recheck(s) for s in sessions[i : i + CONCURRENCY]), return_exceptions=True
            )
            for session, result in zip(sessions[i : i + CONCURRENCY], results, strict=True):
                if isinstance(result, BaseException):
                    # The next connect replays it anyway; say which device waits for that.
                    log.warning(kv("inbox.recheck_failed", device=session.device_id, error=repr(result)))
                else:
                    replayed += result
        log.info(kv("inbox.rechecked", sessions=len(sessions), replayed=replayed))

    async def _recheck(self, session: Session) -> int:
        owner = await self.inbox.enroll(session.user_id, session.device_id, self.device_memory_seconds)
        if owner is not None:
            log.warning(kv("inbox.recheck_owned", device=session.device_id, user=session.user_id, owner=owner))
            return 0
        pushed = session.in_flight
        fresh = [m for m in await self.inbox.pending(session.device_id) if m.message_id not in pushed]
        return sum(session.outbound.push(m) for m in fresh)
