"""The Python SDK toward a slow or crashing app, against a real platform: a bounded buffer whose
reader stops reading (the rest waits at the edge, nothing is lost), and acks after processing
so that an app that crashes mid-message gets it again after reconnecting."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

from pushplat_client import PushClient, PushSender
from pushplat_client.v1 import push_pb2

from tests.helpers import eventually

# 400 of them (25 MB) are far more than HTTP/2's flow-control window and the loopback socket
# buffers together, so the edge must end up holding some.
PAYLOAD = b"x" * 64 * 1024
COUNT = 400


async def test_a_slow_app_holds_the_messages_at_the_edge_and_gets_them_all(platform):
    edge, api = f"127.0.0.1:{platform.ports.edge}", f"127.0.0.1:{platform.ports.api}"
    async with (
        PushClient(edge, user_id="slow", device_id="slow-1", max_buffered=8) as client,
        PushSender(api) as sender,
    ):
        await client.wait_connected(10)
        sent = [
            (await sender.send(device_id="slow-1", payload=PAYLOAD, at_least_once=True, ttl_seconds=600)).message_id
            for _ in range(COUNT)
        ]
        [session] = platform.edge.hub.streams()
        most = 0

        async def held_back() -> bool:
            nonlocal most
            most = max(most, client.buffered)
            # The app reads nothing: the client's buffer is full, and the edge still holds messages
            # it could not write, because the client stopped reading the stream.
            return client.waiting_for_app and client.buffered == 8 and len(session.outbound) > 0

        await eventually(held_back, 20, what="the edge to hold messages back for the slow app")
        assert most <= 8
        got = []
        async with asyncio.timeout(60):
            async for message in client:
                got.append(message.message_id)
                most = max(most, client.buffered)
                if len(got) == len(sent):
                    break
        assert got == sent and most <= 8
        assert client.connects == 1  # paused, not taken for dead


APP = textwrap.dedent(
    """
    import asyncio, sys
    from pushplat_client import PushClient

    async def main(edge: str, crash: bool) -> None:
        async with PushClient(edge, user_id="crashy", device_id="crashy-1", auto_ack=False) as client:
            async for message in client:
                async with client.processing(message):
                    print(message.message_id, flush=True)
                    if crash:
                        raise RuntimeError("the app crashed while processing")
                return

    asyncio.run(main(sys.argv[1], sys.argv[2] == "crash"))
    """
)


async def run_app(path: Path, edge: str, mode: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(path), edge, mode, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def test_an_app_that_crashes_mid_processing_gets_the_message_again(platform, tmp_path):
    edge, api = f"127.0.0.1:{platform.ports.edge}", f"127.0.0.1:{platform.ports.api}"
    app = tmp_path / "app.py"
    app.write_text(APP)
    async with PushSender(api) as sender:
        sent = await sender.send(device_id="crashy-1", payload=b"work", at_least_once=True, ttl_seconds=600)
        code, out, err = await run_app(app, edge, "crash")
        assert code != 0 and "the app crashed while processing" in err
        assert out.split() == [sent.message_id]
        status = await sender.get_status(sent.message_id)
        assert all(d.state != push_pb2.DELIVERY_STATE_ACKED for d in status.devices), status
        # The restarted app reconnects, gets the same message from the inbox, and acks it this time.
        code, out, err = await run_app(app, edge, "ok")
        assert code == 0, err
        assert out.split() == [sent.message_id]

        async def acked() -> bool:
            reply = await sender.get_status(sent.message_id)
            return any(d.state == push_pb2.DELIVERY_STATE_ACKED for d in reply.devices)

        await eventually(acked, 10, what="the second run's ack")
