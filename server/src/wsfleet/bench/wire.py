"""A minimal WebSocket client for load generation.

One :class:`WireConnection` (an ``asyncio.Protocol`` with ``__slots__``) per
connection, no task and no reader coroutine: tens of thousands fit in one
process and receiving a frame costs a header parse and a JSON decode. Frames
from the server are parsed by hand (RFC 6455: unmasked, possibly fragmented);
frames to the server are masked with an all-zero key, which RFC 6455 servers
accept and which spares the client the XOR (this is a load generator, not a
browser: no intermediary is there to protect).

A :class:`Dialect` turns the bench's few operations (join, publish, ping) into
frames and decodes what arrives: :data:`WSFLEET` speaks PROTOCOL.md (the wsfleet
server and the Node ``ws`` peer), :data:`SOCKETIO` speaks Engine.IO 4 /
Socket.IO 5 packets over a plain WebSocket (``transports: ['websocket']``), with
events named like PROTOCOL.md's frame types.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from wsfleet import codec

__all__ = [
    "DIALECTS",
    "SOCKETIO",
    "WSFLEET",
    "Dialect",
    "Endpoint",
    "HandshakeError",
    "WireConnection",
    "open_connection",
]

# Linux: choose the local port at connect() time, so that one source address
# serves ~28,000 connections per destination rather than ~28,000 in all.
IP_BIND_ADDRESS_NO_PORT = 24

_loads = codec.loads
_dumps = codec.dumps

Handler = Callable[["WireConnection", str, Any], None]


class HandshakeError(Exception):
    """The server refused the upgrade (or spoke something else)."""


class Endpoint:
    """Where to connect: host, port and the request target (path and query)."""

    __slots__ = ("host", "port", "target")

    def __init__(self, host: str, port: int, target: str) -> None:
        self.host = host
        self.port = port
        self.target = target

    @classmethod
    def parse(cls, url: str, dialect: Dialect) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "ws" or not parts.hostname:
            raise ValueError(f"{url!r} is not a ws:// URL")
        target = parts.path or dialect.default_path
        if target == "/" and dialect.default_path != "/":
            target = dialect.default_path
        if parts.query:
            target += "?" + parts.query
        return cls(parts.hostname, parts.port or 80, target)

    def __repr__(self) -> str:
        return f"ws://{self.host}:{self.port}{self.target}"


class Dialect:
    """How the bench's operations look on the wire for one kind of server."""

    name = "wsfleet"
    default_path = "/ws"

    def join(self, room: str) -> bytes:
        return b'{"type":"join","room":' + _dumps(room) + b"}"

    def publish(self, room: str, content_json: bytes, request_id: str) -> bytes:
        return (
            b'{"type":"message","room":'
            + _dumps(room)
            + b',"id":"'
            + request_id.encode()
            + b'","content":'
            + content_json
            + b"}"
        )

    def ping(self, request_id: str) -> bytes:
        return b'{"type":"ping","id":"' + request_id.encode() + b'"}'

    def on_text(self, connection: WireConnection, payload: bytes) -> None:
        frame = _loads(payload)
        connection.handler(connection, frame.get("type", ""), frame)


class SocketIODialect(Dialect):
    """Engine.IO 4 / Socket.IO 5 framing over a WebSocket, default namespace.

    The server opens with ``0{...}`` (Engine.IO open); the client connects to the
    namespace with ``40``; events are ``42["name",data]``; the server pings with
    ``2`` and expects ``3``.
    """

    name = "socketio"
    default_path = "/socket.io/?EIO=4&transport=websocket"

    def join(self, room: str) -> bytes:
        return b'42["join",' + _dumps(room) + b"]"

    def publish(self, room: str, content_json: bytes, request_id: str) -> bytes:
        return (
            b'42["message",{"room":'
            + _dumps(room)
            + b',"id":"'
            + request_id.encode()
            + b'","content":'
            + content_json
            + b"}]"
        )

    def ping(self, request_id: str) -> bytes:
        return b'42["ping","' + request_id.encode() + b'"]'

    def on_text(self, connection: WireConnection, payload: bytes) -> None:
        head = payload[:2]
        if head == b"42":
            event, data = _loads(payload[2:])[:2]
            connection.handler(connection, event, data)
        elif head == b"2" or payload == b"2":
            connection.send_text(b"3")  # Engine.IO pong
        elif head[:1] == b"0":
            connection.send_text(b"40")  # connect to the default namespace
        elif head == b"44":
            connection.handler(connection, "error", {"code": "connect_error"})
            connection.abort()
        elif head == b"41":
            connection.abort()
        # "40{...}" (namespace connected) needs no answer: `welcome` follows.


WSFLEET = Dialect()
SOCKETIO = SocketIODialect()
DIALECTS: dict[str, Dialect] = {"wsfleet": WSFLEET, "socketio": SOCKETIO}


def _ignore(connection: WireConnection, kind: str, data: Any) -> None:
    pass


_CLOSE_NORMAL = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # close 1000, zero mask
_PONG_EMPTY = b"\x8a\x80\x00\x00\x00\x00"
_LINGER_ZERO = struct.pack("ii", 1, 0)


class WireConnection(asyncio.Protocol):
    """One client connection; calls ``handler(connection, kind, data)`` per event.

    Kinds are the frame types of PROTOCOL.md (``welcome``, ``joined``,
    ``message``, ``ack``, ``pong``, ``error``...) plus ``_close`` with the close
    code (or None when the TCP connection ended without a close frame).
    """

    __slots__ = (
        "_buffer",
        "_fragments",
        "_head",
        "closed",
        "dialect",
        "handler",
        "ready",
        "request",
        "state",
        "transport",
        "upgraded",
    )

    def __init__(self, dialect: Dialect, request: bytes, ready: asyncio.Future[None]) -> None:
        self.dialect = dialect
        self.handler: Handler = _ignore
        self.transport: asyncio.Transport | None = None
        self.request = request
        self.ready: asyncio.Future[None] | None = ready
        self.upgraded = False
        self.closed = False
        self._head: bytes | None = None
        self._buffer: bytes | None = None
        self._fragments: list[bytes] | None = None
        self.state: Any = None  # whatever the role keeps per connection

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, so no isinstance().
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]
        self.request = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self._fail(ConnectionError("connection lost before the welcome"))
            self.handler(self, "_close", None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            data = self._handshake(data)
            if not data:
                return
        if self._buffer is not None:
            data = self._buffer + data
            self._buffer = None
        self._frames(data)

    # Handshake

    def _handshake(self, data: bytes) -> bytes:
        head = data if self._head is None else self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 16384:
                self._fail(HandshakeError("response head too large"))
                self.abort()
            else:
                self._head = head
            return b""
        self._head = None
        status_line = head[: head.find(b"\r\n")]
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[1] != b"101":
            code = parts[1].decode(errors="replace") if len(parts) > 1 else "?"
            self._fail(HandshakeError(f"HTTP {code}"))
            self.abort()
            return b""
        self.upgraded = True
        return head[end + 4 :]

    def _fail(self, error: Exception) -> None:
        ready = self.ready
        if ready is not None and not ready.done():
            ready.set_exception(error)
        self.ready = None

    def welcomed(self) -> None:
        """Called by a role when the welcome event arrives."""
        ready = self.ready
        if ready is not None and not ready.done():
            ready.set_result(None)
        self.ready = None

    # Frames

    def _frames(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        while size - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                head = 10
            mask = b""
            if second & 0x80:  # servers do not mask, but tolerate it
                if size - pos < head + 4:
                    break
                mask = data[pos + head : pos + head + 4]
                head += 4
            end = pos + head + length
            if end > size:
                break
            payload = data[pos + head : end]
            pos = end
            if mask:
                payload = _unmask(payload, mask)
            opcode = first & 0x0F
            if opcode == 1 and first & 0x80:
                self.dialect.on_text(self, payload)
            elif opcode in (0, 1, 2):
                self._fragment(opcode, bool(first & 0x80), payload)
            elif opcode == 9:
                self._pong(payload)
            elif opcode == 8:
                self._on_close(payload)
                return
            if self.transport is None:
                return
        if pos < size:
            self._buffer = data[pos:]

    def _fragment(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode != 0:
            self._fragments = [payload] if opcode == 1 else None
            if opcode == 2:
                return  # binary messages are not part of the protocol
        elif self._fragments is not None:
            self._fragments.append(payload)
        if fin and self._fragments is not None:
            message = b"".join(self._fragments)
            self._fragments = None
            self.dialect.on_text(self, message)

    def _pong(self, payload: bytes) -> None:
        if self.transport is None:
            return
        if not payload:
            self.transport.write(_PONG_EMPTY)
        else:
            self.transport.write(_header(0x8A, len(payload)) + payload)

    def _on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        if not self.closed:
            self.closed = True
            self._fail(HandshakeError(f"closed with {code} before the welcome"))
            self.handler(self, "_close", code)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.write(_CLOSE_NORMAL)
            self.transport.close()

    # Sending

    def send_text(self, payload: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        transport.write(_header(0x81, len(payload)) + payload)

    def close(self) -> None:
        """Start a normal close (1000); the server answers and closes TCP."""
        if self.transport is not None and not self.closed:
            self.transport.write(_CLOSE_NORMAL)

    def abort(self) -> None:
        """Drop the TCP connection at once with a RST (no TIME_WAIT left behind)."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        transport.abort()


def _header(first: int, length: int) -> bytes:
    """A masked frame header with an all-zero masking key."""
    if length < 126:
        return bytes((first, 0x80 | length, 0, 0, 0, 0))
    if length < 65536:
        return bytes((first, 0xFE)) + length.to_bytes(2, "big") + b"\x00\x00\x00\x00"
    return bytes((first, 0xFF)) + length.to_bytes(8, "big") + b"\x00\x00\x00\x00"


def _unmask(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def handshake_request(endpoint: Endpoint) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {endpoint.target} HTTP/1.1\r\n"
        f"Host: {endpoint.host}:{endpoint.port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def open_connection(
    endpoint: Endpoint,
    dialect: Dialect,
    handler: Handler,
    *,
    source: str | None = None,
    timeout: float = 30.0,
) -> tuple[WireConnection, float]:
    """Connect, upgrade and wait for the welcome; returns (connection, seconds taken).

    ``handler`` must call :meth:`WireConnection.welcomed` on the ``welcome`` event.
    Raises :class:`HandshakeError`, ``OSError`` or ``TimeoutError``.
    """
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    connection: WireConnection | None = None
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        ready: asyncio.Future[None] = loop.create_future()
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (endpoint.host, endpoint.port))
            connection = WireConnection(dialect, handshake_request(endpoint), ready)
            connection.handler = handler
            await loop.create_connection(lambda: connection, sock=sock)
            await ready
    except BaseException:
        if connection is not None and connection.transport is not None:
            connection.handler = _ignore
            connection.abort()
        else:
            sock.close()
        raise
    return connection, time.perf_counter() - started
