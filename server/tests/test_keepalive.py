"""Server pings (PROTOCOL.md "Transport"): one keepalive task for the whole server.

A connection that answers pings stays open; one that does not is closed with 1011
once ``--ping-timeout`` has passed after an unanswered ping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time

from conftest import Launcher, connect, recv_json, send_json

INTERVAL = 0.4
TIMEOUT = 0.6


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def test_silent_connection_is_pinged_then_closed_1011(launch: Launcher) -> None:
    server = launch("--ping-interval", str(INTERVAL), "--ping-timeout", str(TIMEOUT))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    opened = time.monotonic()
    opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
    assert opcode == 0x1 and json.loads(payload)["type"] == "welcome"
    # This client never answers: it gets one ping, then the close, then EOF.
    frames: list[tuple[int, bytes, float]] = []
    async with asyncio.timeout(5 * (INTERVAL + TIMEOUT)):
        while True:
            try:
                opcode, payload = await read_frame(reader)
            except asyncio.IncompleteReadError:
                break
            frames.append((opcode, payload, time.monotonic() - opened))
    writer.close()
    opcodes = [opcode for opcode, _, _ in frames]
    assert opcodes == [0x9, 0x8], frames  # ping, close
    pinged_after, closed_after = frames[0][2], frames[1][2]
    assert pinged_after <= 2 * INTERVAL + 0.5, frames
    assert closed_after - pinged_after >= TIMEOUT - 0.05, frames
    (code,) = struct.unpack("!H", frames[1][1][:2])
    assert code == 1011 and frames[1][1][2:] == b"keepalive ping timeout"


async def test_connection_that_answers_pings_stays_open(launch: Launcher) -> None:
    server = launch("--ping-interval", str(INTERVAL), "--ping-timeout", str(TIMEOUT))
    connection, welcome = await connect(server.url)
    assert welcome["heartbeat"] == INTERVAL
    # websockets' client answers every ping; several rounds and timeouts pass.
    await asyncio.sleep(4 * (INTERVAL + TIMEOUT))
    await send_json(connection, {"type": "ping", "id": "still-there"})
    assert await recv_json(connection) == {"type": "pong", "id": "still-there"}
    await connection.close()
