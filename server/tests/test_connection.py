"""The inbound token bucket, and FleetConnection's slim state (unit tests)."""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import weakref
from collections.abc import AsyncIterator, Awaitable

import pytest
import websockets
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from wsfleet.connection import (
    ConnectionPolicy,
    ConnectionRegistry,
    FleetConnection,
    RequestAnswer,
    TokenBucket,
    _content_length,
    text_frame,
)


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(50.0, 100, 0.0)
    assert all(bucket.take(0.0) for _ in range(100))
    assert not bucket.take(0.0)
    assert bucket.take(0.02)  # one token per 20 ms at 50/s


def test_sustained_abuse_is_detected_but_a_client_at_the_limit_is_not() -> None:
    polite = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    for _ in range(1000):  # exactly at the limit for 20 s
        assert polite.take(now)
        now += 0.02
    assert not polite.abusive

    abuser = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    while not abuser.abusive and now < 10:
        abuser.take(now)
        now += 0.005  # 200 frames/s against a 50/s limit
    assert abuser.abusive
    assert now < 3


def test_more_than_burst_refusals_within_the_window_is_abuse_exactly() -> None:
    bucket = TokenBucket(0.001, 10, 0.0, window=10.0)
    assert all(bucket.take(0.0) for _ in range(10))
    assert not any(bucket.take(0.0) for _ in range(10))
    assert not bucket.abusive  # 10 refusals: at the bound
    assert not bucket.take(0.0)
    assert bucket.abusive  # the 11th


def test_steady_twice_the_limit_is_abuse_and_refusals_spread_out_are_not() -> None:
    steady = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    while not steady.abusive and now < 10:
        steady.take(now)
        now += 1 / 99  # 99 frames/s against 50/s: about 49 refused per second
    assert steady.abusive and now < 5

    spread = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    for _ in range(30):  # bursts of 110 every 11 s: 10 refusals each time
        for _ in range(110):
            spread.take(now)
        now += 11.0
    assert not spread.abusive


# The connection layer on websockets' Sans-I/O API, served in-process with a
# handler that echoes text messages (unit tests of the layer, real sockets).


class EchoHandler:
    def __init__(self) -> None:
        self.requests: list[weakref.ref[Request]] = []
        self.open: list[FleetConnection] = []
        self.gone: list[FleetConnection] = []

    def process_request(self, connection: FleetConnection, request: Request) -> RequestAnswer:
        self.requests.append(weakref.ref(request))
        return None

    def opened(self, connection: FleetConnection) -> None:
        self.open.append(connection)

    def message(self, connection: FleetConnection, data: str | bytes) -> Awaitable[None] | None:
        if data == "slow":
            return self._slow(connection)
        connection.send_frame(data.encode() if isinstance(data, str) else b"binary")
        return None

    async def _slow(self, connection: FleetConnection) -> None:
        await asyncio.sleep(0.05)
        connection.send_frame(b"slow done")

    def closed(self, connection: FleetConnection) -> None:
        self.gone.append(connection)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[EchoHandler, int]]:
    handler = EchoHandler()
    registry = ConnectionRegistry(ConnectionPolicy(max_size=4096), handler)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FleetConnection(registry), "127.0.0.1", 0)
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    for connection in list(registry.connections):
        connection.abort()


async def test_open_connection_keeps_no_handshake_request_and_no_dict(
    echo: tuple[EchoHandler, int],
) -> None:
    handler, port = echo
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", compression=None) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
        gc.collect()
        assert handler.requests and handler.requests[0]() is None, "the request is still held"
        (connection,) = handler.open
        assert not hasattr(connection, "__dict__")
    await asyncio.wait_for(_until(lambda: handler.gone), 5)


async def test_messages_are_handed_over_in_order_while_one_waits(
    echo: tuple[EchoHandler, int],
) -> None:
    _, port = echo
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
        for text in ("slow", "a", "b", "slow", "c"):
            await client.send(text)
        got = [await client.recv() for _ in range(5)]
        assert got == ["slow done", "a", "b", "slow done", "c"]
        await client.send(["frag", "mented"])  # one message in three frames
        assert await client.recv() == "fragmented"


def _masked(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=True, extensions=[])


async def _raw_upgrade(
    port: int, ahead: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + ahead
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


async def test_a_frame_sent_ahead_of_the_101_is_answered(echo: tuple[EchoHandler, int]) -> None:
    _, port = echo
    reader, writer = await _raw_upgrade(port, _masked(Opcode.TEXT, b"early"))
    assert await reader.readexactly(7) == text_frame(b"early")
    writer.close()


async def test_invalid_utf8_closes_1007_and_too_big_closes_1009(
    echo: tuple[EchoHandler, int],
) -> None:
    _, port = echo
    for payload, code in ((b"\xff\xfe", 1007), (b"x" * 5000, 1009)):
        reader, writer = await _raw_upgrade(port)
        writer.write(_masked(Opcode.TEXT, payload))
        close = await reader.readexactly(4)
        assert close[0] == 0x88
        assert int.from_bytes(close[2:4], "big") == code
        writer.close()


async def _until(condition: object) -> None:
    assert callable(condition)
    while not condition():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_matches_websockets_framing(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


class GreetingHandler(EchoHandler):
    """Sends a greeting on opening, framed by the caller (as the welcome is) or not."""

    def __init__(self, framed: bool) -> None:
        super().__init__()
        self.framed = framed

    def opened(self, connection: FleetConnection) -> None:
        super().opened(connection)
        if self.framed:
            connection.send_framed(b"greeting", text_frame(b"greeting"))
        else:
            connection.send_frame(b"greeting")


@pytest.mark.parametrize("framed", [True, False])
async def test_what_opened_sends_follows_the_101_in_order(framed: bool) -> None:
    # The 101 waits for what the handler sends on opening; both leave together,
    # the 101 first, whichever way the handler sends.
    handler = GreetingHandler(framed)
    registry = ConnectionRegistry(ConnectionPolicy(max_size=4096), handler)
    server = await asyncio.get_running_loop().create_server(
        lambda: FleetConnection(registry), "127.0.0.1", 0
    )
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await _raw_upgrade(port, _masked(Opcode.TEXT, b"early"))
        assert await reader.readexactly(10) == text_frame(b"greeting")
        assert await reader.readexactly(7) == text_frame(b"early")
        writer.close()
    finally:
        server.close()
        for connection in list(registry.connections):
            connection.abort()


async def test_a_compressed_connection_gets_its_greeting_and_echoes() -> None:
    handler = GreetingHandler(framed=True)
    policy = ConnectionPolicy(max_size=4096, extensions=[ServerPerMessageDeflateFactory()])
    registry = ConnectionRegistry(policy, handler)
    server = await asyncio.get_running_loop().create_server(
        lambda: FleetConnection(registry), "127.0.0.1", 0
    )
    try:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            assert await client.recv() == "greeting"
            await client.send("hello " * 50)
            assert await client.recv() == "hello " * 50
        (connection,) = handler.open
        assert connection.compressed
    finally:
        server.close()
        for connection in list(registry.connections):
            connection.abort()


@pytest.mark.parametrize(
    ("head", "length"),
    [
        (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 12", 12),
        (b"POST /api/publish HTTP/1.1\r\ncOnTeNt-LeNgTh \t: 7\r\nHost: x", 7),
        (b"POST /api/publish HTTP/1.1\r\nHost: x\r\n Content-Length\x0b:3", 3),
        (b"POST /api/publish HTTP/1.1\r\nContent-Length: 0", None),
        (b"POST /api/publish HTTP/1.1\r\nContent-Length: x", None),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket", None),
        (b"GET /content-length:5 HTTP/1.1\r\nHost: x", None),
        (b"GET /ws HTTP/1.1\r\nX-Content-Length: 5", None),
    ],
)
def test_content_length_of_a_request_head(head: bytes, length: int | None) -> None:
    assert _content_length(head) == length
