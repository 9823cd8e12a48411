"""SIGTERM/SIGINT before the server is up: the first cancels the start (there is nothing to
drain yet); a second, should the first's cancel be lost or the stop hang, ends the process."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pushplat.config import Config
from pushplat.server import Server


async def test_a_signal_while_starting_cancels_the_start():
    server = Server(Config())
    starting = asyncio.create_task(asyncio.sleep(60))
    server._starting = starting
    server._on_signal(signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert server.stop_requested and not server._draining


async def test_a_second_signal_while_starting_ends_the_process_with_that_signal(monkeypatch):
    killed: list[tuple[int, int]] = []
    dispositions: list[tuple[int, object]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setattr(signal, "signal", lambda sig, handler: dispositions.append((sig, handler)))
    server = Server(Config())
    server._starting = asyncio.create_task(asyncio.sleep(60))
    try:
        server._on_signal(signal.SIGINT)
        assert killed == []
        server._on_signal(signal.SIGINT)
        # The default disposition, not Python's KeyboardInterrupt: the process ends, no traceback.
        assert dispositions == [(signal.SIGINT, signal.SIG_DFL)]
        assert killed == [(os.getpid(), signal.SIGINT)]
    finally:
        server._starting.cancel()


async def test_a_signal_once_started_drains(monkeypatch):
    server = Server(Config())
    drained = asyncio.Event()

    async def drain() -> None:
        drained.set()

    monkeypatch.setattr(server, "drain", drain)
    server._started = True
    server._on_signal(signal.SIGTERM)
    await asyncio.wait_for(drained.wait(), 5)
    assert not server.stop_requested
