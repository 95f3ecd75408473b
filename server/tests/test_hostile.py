"""Hostile clients are bounded: every outbound byte counts toward the slow-consumer
bound (4008), every inbound frame toward the rate limit (4029, PROTOCOL.md: more
than ``rate_burst`` refused frames within 10 seconds)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import threading
import time
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection

from conftest import Launcher, ServerProcess, connect, recv_json, send_json

QUEUE_BYTES = 1024 * 1024
# What the server may keep besides the outbound bound itself (allocator slack).
SLACK_BYTES = 6 * 1024 * 1024


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked


def raw_upgrade(port: int) -> socket.socket:
    """A WebSocket handshake on a plain socket with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_close_code(sock: socket.socket, timeout: float = 10.0) -> int | None:
    """Read server frames until the close frame; return its code (None if none came)."""
    sock.settimeout(timeout)
    buffer = b""
    while True:
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                (length,) = struct.unpack("!H", buffer[2:4])
                header = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                (length,) = struct.unpack("!Q", buffer[2:10])
                header = 10
            if len(buffer) < header + length:
                break
            payload = buffer[header : header + length]
            buffer = buffer[header + length :]
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
        try:
            chunk = sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):
            return None
        if not chunk:
            return None
        buffer += chunk


async def test_ping_flood_from_a_non_reader_is_closed_4008_with_bounded_memory(
    launch: Launcher,
) -> None:
    server = launch(
        "--rate-limit", "10000000", "--rate-burst", "10000000", "--queue-bytes", str(QUEUE_BYTES)
    )
    sock = raw_upgrade(server.port)
    baseline = resident_bytes(server.pid)
    ping = masked_frame(0x9, b"p" * 125)
    batch = ping * 200
    stop = threading.Event()
    sent = 0

    def flood() -> None:
        nonlocal sent
        sock.settimeout(0.2)
        while not stop.is_set() and sent < 64 * 1024 * 1024:
            try:
                sock.sendall(batch)
                sent += len(batch)
            except (TimeoutError, OSError):
                continue

    flooder = threading.Thread(target=flood)
    flooder.start()
    peak = baseline
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            peak = max(peak, resident_bytes(server.pid))
            if server.metric("ws_slow_consumer_disconnects_total") >= 1:
                break
            await asyncio.sleep(0.05)
        # The flood goes on a little after the close: nothing it sends is answered.
        for _ in range(10):
            peak = max(peak, resident_bytes(server.pid))
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.to_thread(flooder.join)
    growth = peak - baseline
    print(f"\nping flood: {sent / 1e6:.1f} MB of pings sent, server RSS +{growth / 1e6:.1f} MB")
    assert server.metric("ws_slow_consumer_disconnects_total") == 1, f"RSS +{growth}"
    assert growth < QUEUE_BYTES + SLACK_BYTES, growth
    # Reading at last, the client finds the 4008 close behind the pongs.
    assert await asyncio.to_thread(read_close_code, sock) == 4008
    sock.close()


async def closed_code(connection: ClientConnection) -> tuple[int | None, dict[str, int]]:
    """Read until the server closes; return the close code and the error codes seen."""
    codes: dict[str, int] = {}
    try:
        async with asyncio.timeout(20):
            while True:
                frame = await recv_json(connection, timeout=20)
                if frame["type"] == "error":
                    codes[frame["code"]] = codes.get(frame["code"], 0) + 1
    except websockets.ConnectionClosed:
        pass
    return connection.close_code, codes


async def test_binary_flood_reaches_4029(launch: Launcher) -> None:
    server = launch()  # default limits: 50 frames/s, burst 100
    connection, _ = await connect(server.url)
    for _ in range(1500):
        await connection.send(b"\x00binary")
    code, errors = await closed_code(connection)
    assert code == 4029, errors
    assert errors.get("rate_limited", 0) == 101, errors
    assert 100 <= errors.get("unsupported", 0) < 200, errors


async def test_ping_flood_reaches_4029(launch: Launcher) -> None:
    server = launch()
    connection, _ = await connect(server.url)
    for _ in range(1500):
        await connection.ping()
    code, _ = await closed_code(connection)
    assert code == 4029


async def test_4029_boundary_more_than_burst_refusals(launch: Launcher) -> None:
    """Burst 10, no refill to speak of: 10 accepted, 10 refused keep the connection,
    the 11th refusal closes it."""
    server = launch("--rate-limit", "0.001", "--rate-burst", "10")
    connection, _ = await connect(server.url)
    for n in range(20):
        await send_json(connection, {"type": "ping", "id": n})
    answers = [await recv_json(connection) for _ in range(20)]
    assert [a["type"] for a in answers] == ["pong"] * 10 + ["error"] * 10
    assert {a["code"] for a in answers[10:]} == {"rate_limited"}
    await send_json(connection, {"type": "ping", "id": 20})
    last = await recv_json(connection)
    assert (last["type"], last["code"], last["id"]) == ("error", "rate_limited", 20)
    code, _ = await closed_code(connection)
    assert code == 4029
    # The close is counted by its code, for the rate-limit alert and dashboard panel.
    for _ in range(50):
        if server.metric("ws_server_closes_total", 'code="4029"') == 1:
            break
        await asyncio.sleep(0.1)
    assert server.metric("ws_server_closes_total", 'code="4029"') == 1
    assert server.metric("ws_server_closes_total", 'code="4008"') == 0


async def test_steady_rate_over_the_limit_reaches_4029(launch: Launcher) -> None:
    """Twice the limit, steadily (like 99 frames/s against 50/s): closed, not just refused."""
    server: ServerProcess = launch("--rate-limit", "20", "--rate-burst", "10")
    connection, _ = await connect(server.url)
    started = time.monotonic()

    async def send_steadily() -> None:
        n = 0
        while True:
            await send_json(connection, {"type": "ping", "id": n})
            n += 1
            await asyncio.sleep(1 / 40)

    sender = asyncio.create_task(send_steadily())
    code, errors = await closed_code(connection)
    sender.cancel()
    assert code == 4029, errors
    assert time.monotonic() - started < 10
