"""SIGTERM: health 503 ``draining`` and 503 handshakes at once, ``server-shutdown``
then 1012 for every client, no acked message lost, exit 0 within the drain timeout;
a second signal exits at once."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import (
    Launcher,
    ServerProcess,
    connect,
    join,
    recv_json,
    send_json,
    unique_room,
    wait_until_async,
)


async def stalled_client(server: ServerProcess) -> websockets.ClientConnection:
    """A client that will not read, so the drain has to wait for it (close timeout)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    connection = await websockets.connect(server.url, sock=raw, compression=None, max_queue=1)
    await send_json(connection, {"type": "ping"})
    return connection


async def test_sigterm_drains_every_client_without_losing_acked_messages(launch: Launcher) -> None:
    server = launch(
        "--drain-spread",
        "0.5",
        "--drain-timeout",
        "10",
        "--rate-limit",
        "5000",
        "--rate-burst",
        "5000",
    )
    room = unique_room("drain")
    members = []
    for _ in range(3):
        connection, _ = await connect(server.url)
        await join(connection, room)
        members.append(connection)
    publisher, _ = await connect(server.url)
    stalled = await stalled_client(server)
    for _ in range(20):
        await stalled.send(
            '{"type":"message","room":"' + room + '","content":"' + "z" * 8000 + '"}'
        )

    acked: list[str] = []
    refused = 0

    async def publish_until_closed() -> None:
        nonlocal refused
        sent = 0
        try:
            while True:
                await send_json(
                    publisher, {"type": "message", "room": room, "content": sent, "id": str(sent)}
                )
                sent += 1
                frame = await recv_json(publisher)
                while frame["type"] not in ("ack", "error"):
                    frame = await recv_json(publisher)
                if frame["type"] == "ack":
                    acked.append(frame["offset"])
                else:
                    assert frame["code"] == "unavailable"
                    refused += 1
        except ConnectionClosed:
            pass

    async def read_until_closed(
        connection: websockets.ClientConnection,
    ) -> tuple[list[str], list[dict[str, object]]]:
        offsets: list[str] = []
        shutdowns: list[dict[str, object]] = []
        try:
            async for raw in connection:
                frame = json.loads(raw)
                if frame["type"] == "message":
                    assert not shutdowns, "no message after server-shutdown"
                    offsets.append(frame["offset"])
                elif frame["type"] == "server-shutdown":
                    shutdowns.append(frame)
        except ConnectionClosed:
            pass
        return offsets, shutdowns

    readers = [asyncio.create_task(read_until_closed(member)) for member in members]
    producer = asyncio.create_task(publish_until_closed())
    await wait_until_async(
        lambda: len(acked) >= 50, "some acked messages", timeout=10
    )  # in flight now
    started = time.monotonic()
    server.signal(signal.SIGTERM)

    # At once: health says draining and new handshakes are refused with Retry-After.
    await wait_until_async(lambda: server.json("/health")[0] == 503, "health 503", timeout=3)
    assert server.json("/health")[1]["status"] == "draining"
    with pytest.raises(InvalidStatus) as refusal:
        await websockets.connect(server.url)
    assert refusal.value.response.status_code == 503
    assert "Retry-After" in refusal.value.response.headers

    results = await asyncio.gather(*readers)
    await producer
    assert server.process is not None
    exit_code = await asyncio.to_thread(server.process.wait, 15)
    elapsed = time.monotonic() - started
    assert exit_code == 0
    assert elapsed < 10
    assert len(acked) >= 50
    for member, (offsets, shutdowns) in zip(members, results, strict=True):
        assert member.close_code == 1012
        assert len(shutdowns) == 1
        assert 0 <= int(shutdowns[0]["reconnectAfter"]) <= 500  # type: ignore[call-overload]
        missing = set(acked) - set(offsets)
        assert not missing, f"{len(missing)} acked messages not delivered"
        assert len(offsets) == len(set(offsets))
    stalled.transport.abort()


async def test_second_signal_exits_at_once(launch: Launcher) -> None:
    server = launch("--drain-timeout", "30")
    stalled = await stalled_client(server)
    for _ in range(30):
        await stalled.send('{"type":"join","room":"' + unique_room() + '"}')
    server.signal(signal.SIGTERM)
    await wait_until_async(lambda: server.json("/health")[0] == 503, "draining", timeout=3)
    server.signal(signal.SIGINT)
    assert server.process is not None
    assert await asyncio.to_thread(server.process.wait, 5) == 130
    stalled.transport.abort()
