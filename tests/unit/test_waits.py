"""wait_event: a background loop that waits on it stops when cancelled, even when the cancel
arrives in the same turn as the event it waits for (asyncio.wait_for on 3.11 swallows that
cancel, and Server.stop() then hung on the receipts flusher)."""

from __future__ import annotations

import asyncio

from pushplat.waits import wait_event


async def test_set_in_time_is_true_and_a_timeout_is_false():
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5)


async def test_a_cancel_in_the_same_turn_as_the_event_ends_the_loop():
    for _ in range(50):
        event = asyncio.Event()
        turns = 0

        async def loop(event: asyncio.Event) -> None:
            nonlocal turns
            while True:
                await wait_event(event, 10)
                event.clear()
                turns += 1

        task = asyncio.create_task(loop(event))
        await asyncio.sleep(0)  # the loop is waiting
        event.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done == {task} and task.cancelled(), f"the loop went on after its cancel ({turns} turns)"
