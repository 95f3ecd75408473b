"""A client that reads nothing is closed with 4008 while the others keep up, and the
server's memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import websockets

from conftest import Launcher, connect, join, recv_type, send_json, unique_room

# Bound on the server's resident memory growth while a stalled client is fed 12 MB.
MEMORY_GROWTH_BOUND = 64 * 1024 * 1024


async def consume(connection: websockets.ClientConnection) -> None:
    """Read and drop frames (the publisher's acks) until the connection closes."""
    async for _ in connection:
        pass


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_stalled_reader_is_closed_4008_while_others_keep_up(launch: Launcher) -> None:
    server = launch(
        "--rate-limit",
        "5000",
        "--rate-burst",
        "5000",
        "--queue-bytes",
        "262144",
        "--queue-messages",
        "200",
        "--history-size",
        "10",
    )
    room = unique_room("slow")
    # The stalled client has a tiny receive buffer so the kernel cannot absorb much.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    stalled = await websockets.connect(server.url, sock=raw, compression=None, max_queue=1)
    await recv_type(stalled, "welcome")
    await join(stalled, room)
    healthy, _ = await connect(server.url)
    await join(healthy, room)
    publisher, _ = await connect(server.url)
    acks = asyncio.create_task(consume(publisher))
    baseline = resident_bytes(server.pid)

    # The stalled client stops reading now: its websockets queue holds one frame,
    # then the transport pauses and the server's backlog fills up.
    chunk = "x" * 8000
    count = 1500  # 12 MB in all
    received = 0
    peak = baseline

    async def read_healthy() -> None:
        nonlocal received
        while received < count:
            frame = await recv_type(healthy, "message", timeout=20)
            assert frame["content"]["n"] == received  # in order, nothing skipped
            received += 1

    reader = asyncio.create_task(read_healthy())
    for n in range(count):
        # The healthy client reads as fast as it can; keeping at most 20 messages in
        # flight to it makes sure it is a fast consumer even on a loaded test machine.
        while n - received > 20:
            await asyncio.sleep(0.001)
        await send_json(
            publisher, {"type": "message", "room": room, "content": {"n": n, "pad": chunk}}
        )
        if n % 500 == 0:
            peak = max(peak, resident_bytes(server.pid))
            await asyncio.sleep(0)
    await asyncio.wait_for(reader, 60)
    peak = max(peak, resident_bytes(server.pid))
    assert received == count
    assert server.metric("ws_slow_consumer_disconnects_total") == 1
    assert peak - baseline < MEMORY_GROWTH_BOUND, (baseline, peak)

    # Reading again, the stalled client finds the 4008 close behind what was queued.
    with_close = None
    async with asyncio.timeout(10):
        try:
            async for _ in stalled:
                pass
        except websockets.ConnectionClosed as closed:
            with_close = closed
    assert stalled.close_code == 4008, with_close
    await healthy.close()
    await publisher.close()
    await acks


async def test_overflow_by_message_count(launch: Launcher) -> None:
    """The message limit applies even when the bytes are few."""
    server = launch("--rate-limit", "5000", "--rate-burst", "5000", "--queue-messages", "50")
    room = unique_room("count")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    stalled = await websockets.connect(server.url, sock=raw, compression=None, max_queue=1)
    await recv_type(stalled, "welcome")
    await join(stalled, room)
    publisher, _ = await connect(server.url)
    acks = asyncio.create_task(consume(publisher))
    # Enough small messages to fill the kernel buffers and then the 50-message backlog.
    for n in range(3000):
        await publisher.send(json.dumps({"type": "message", "room": room, "content": "m" * 900}))
        if server.metric("ws_slow_consumer_disconnects_total") >= 1 if n % 250 == 249 else False:
            break
    for _ in range(100):
        if server.metric("ws_slow_consumer_disconnects_total") == 1:
            break
        await asyncio.sleep(0.05)
    assert server.metric("ws_slow_consumer_disconnects_total") == 1
    await publisher.close()
    await acks
    stalled.transport.abort()
