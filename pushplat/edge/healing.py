"""InboxRecheck: what an edge does for sessions whose registry entries the store had lost.

The registration handler re-creates the entries (registration.py). Messages routed while they
were missing found no route: at-least-once ones went only to the device's inbox. So for each
healed session this binds the device to its user again (the inbox's enrollment was lost with
the rest) and has the session catch up from its inbox, as a replay does (ids queued or in
flight are skipped there).
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
        log.info(kv("inbox.rechecked", sessions=len(sessions), catching_up=replayed))

    async def _recheck(self, session: Session) -> int:
        owner = await self.inbox.enroll(session.user_id, session.device_id, self.device_memory_seconds)
        if owner is not None:
            log.warning(kv("inbox.recheck_owned", device=session.device_id, user=session.user_id, owner=owner))
            return 0
        # The writer's catch-up reads the inbox with every rule a replay keeps (frame cap, ids
        # queued or in flight skipped, replay order, the queue's budget): hand it the work.
        session.behind = True
        session.catch_up_stalled = False
        session.outbound.nudge()
        return 1
