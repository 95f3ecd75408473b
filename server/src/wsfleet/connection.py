"""One WebSocket connection: an ``asyncio.Protocol`` around websockets' Sans-I/O layer.

websockets documents its Sans-I/O layer (:class:`websockets.server.ServerProtocol`)
for integrations like this one: bytes from the network go in with ``receive_data``,
``events_received`` hands out the handshake request and the frames,
``data_to_send`` hands back the bytes to write, and ``close_expected`` says when the
TCP connection should be closed after a timeout. Everything else is here, on the
event loop's callbacks (``data_received``, ``pause_writing``...): no task per
connection, no reader coroutine. A task exists only while a frame of the connection
awaits Redis (a publish, a join), and the connection's later frames wait in its
``inbox`` meanwhile, so they are handled one at a time in the order they came.

An idle connection is small: this class has ``__slots__``, rarely used state is
created when first needed (the backlog, the room set, the rate limit, the futures
of a close) and the handshake is done by one ``ServerProtocol`` while the open
connection runs on another, made with ``state=OPEN`` (a documented constructor
argument): the handshake protocol holds the request (its headers, ~2 KB) for as
long as it lives, so it is dropped after the upgrade. (With permessage-deflate
negotiated the handshake protocol stays, as it holds the negotiated extension.)

Outbound frames never wait. While the socket keeps up, a frame goes straight to
the transport. When the transport's write buffer passes its high-water mark
(asyncio calls ``pause_writing``), frames wait in a per-connection backlog of
references to the shared, already-encoded bytes, and ``resume_writing`` flushes
it. Every outbound byte counts toward the limit: the backlog plus the transport's
write buffer, which also holds what the protocol writes by itself (pongs answering
the client's pings, close frames). Over the byte or message limit means a slow
consumer: the backlog is dropped, the connection's further input is ignored (so a
client that sends pings and reads nothing makes no more pongs) and it is closed
with 4008, so memory stays bounded while every other member keeps receiving.

Every inbound frame counts toward the rate limit (:class:`TokenBucket`): messages
(text or binary) in :mod:`wsfleet.session`, ping and pong frames here. More than
``rate_burst`` frames refused within ``abuse_window`` seconds is abuse: close 4029.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol
from typing import cast

from websockets.extensions.base import ServerExtensionFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfleet.auth import Identity
from wsfleet.codec import stdlib_dumps

__all__ = [
    "CloseCode",
    "ConnectionHandler",
    "ConnectionPolicy",
    "ConnectionRegistry",
    "FleetConnection",
    "TokenBucket",
    "text_frame",
]

logger = logging.getLogger("wsfleet.connection")


def text_frame(payload: bytes) -> bytes:
    """``payload`` as one unmasked, final, uncompressed text frame (RFC 6455 5.2)."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return _HEADER_16.pack(0x81, 126, length) + payload
    return _HEADER_64.pack(0x81, 127, length) + payload


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class CloseCode:
    """Close codes of PROTOCOL.md."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_DATA = 1007
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008
    RATE_LIMIT_ABUSE = 4029


# What a request handler answers: a response (sent, then the connection ends),
# None (go on with the upgrade), or an awaitable of either (e.g. a publish).
RequestAnswer = Response | None | Awaitable[Response | None]


class ConnectionHandler(TypingProtocol):
    """What the server does with a connection's handshake, messages and end."""

    def process_request(self, connection: FleetConnection, request: Request) -> RequestAnswer:
        """Answer an HTTP request, or return None to accept the WebSocket upgrade."""
        ...

    def opened(self, connection: FleetConnection) -> None:
        """The upgrade is done: the connection is open."""
        ...

    def message(self, connection: FleetConnection, data: str | bytes) -> Awaitable[None] | None:
        """Handle one message; an awaitable if handling it must wait (it is awaited
        before the connection's next message is handed over)."""
        ...

    def closed(self, connection: FleetConnection) -> None:
        """The TCP connection is gone and no message of it is being handled."""
        ...


@dataclass(slots=True)
class ConnectionPolicy:
    """Limits and hooks shared by every connection of one server."""

    queue_bytes: int = 1024 * 1024
    queue_messages: int = 1000
    rate_limit: float = 50.0
    rate_burst: int = 100
    abuse_window: float = 10.0  # more than rate_burst refused frames within it: 4029
    close_timeout: float = 5.0
    open_timeout: float = 10.0  # the handshake must be done within it
    max_request_body: int = 64 * 1024
    max_size: int | None = 1024 * 1024  # inbound message size (1009 beyond)
    # Transport write buffer above which frames wait in the backlog (references to
    # shared bytes rather than per-connection copies).
    write_limit: int = 16 * 1024
    # Messages waiting while one is handled before reading pauses.
    max_inbox: int = 8
    extensions: Sequence[ServerExtensionFactory] | None = None
    on_slow_consumer: Callable[[FleetConnection], None] | None = None


@dataclass(eq=False)
class ConnectionRegistry:
    """One server's policy, handler and connections (handshaking ones included).

    It also coalesces fanout writes: :meth:`FleetConnection.send_framed` collects
    the frames one loop iteration sends to a connection and :meth:`flush` (once,
    soon after) writes them in one ``write``, so a busy loop makes fewer, fuller
    writes instead of one system call per member per message.
    """

    policy: ConnectionPolicy
    handler: ConnectionHandler
    connections: set[FleetConnection] = field(default_factory=set)
    dirty: list[FleetConnection] = field(default_factory=list)
    flush_scheduled: bool = False

    def schedule_flush(self, connection: FleetConnection) -> None:
        self.dirty.append(connection)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, []
        for connection in dirty:
            connection.write_pending()


_OPEN = State.OPEN
_CONNECTING = State.CONNECTING
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PING = Opcode.PING
_PONG = Opcode.PONG

# Payload of the server's keepalive pings (see wsfleet.keepalive), one per process.
KEEPALIVE_PAYLOAD = struct.pack("!I", random.getrandbits(32))

# Upper bound on an HTTP request head kept aside while its body arrives.
MAX_HEAD = 64 * 1024

_background_tasks: set[asyncio.Task[None]] = set()

# The logger websockets would look up for every ServerProtocol (two per connection);
# passed in (the documented ``logger`` argument) so it is looked up once.
_WEBSOCKETS_LOGGER = logging.getLogger("websockets.server")

# Every header line that _content_length's loop would take for a Content-Length
# (name stripped of whitespace, ASCII case ignored) matches this: one search in C
# settles the usual request, which has none, without splitting its lines.
_CONTENT_LENGTH = re.compile(rb"\r\n\s*content-length\s*:", re.IGNORECASE)


def _spawn(coroutine: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coroutine)
    _background_tasks.add(task)
    task.add_done_callback(_background_tasks.discard)


class FleetConnection(asyncio.Protocol):
    """A WebSocket connection with wsfleet's state; see the module docstring."""

    __slots__ = (
        "_flushed",
        "_head",
        "_lost_waiter",
        "_timer",
        "backlog",
        "backlog_bytes",
        "busy",
        "closing",
        "compressed",
        "conn_id",
        "eof",
        "expiry",
        "fragments",
        "identity",
        "inbox",
        "latency",
        "lost",
        "opened_at",
        "overflowed",
        "paused",
        "pending",
        "ping_sent_at",
        "protocol",
        "rate",
        "reading_paused",
        "registry",
        "request_body",
        "request_body_too_large",
        "rooms",
        "sender",
        "server_close_code",
        "transport",
    )

    transport: asyncio.Transport

    def __init__(self, registry: ConnectionRegistry) -> None:
        policy = registry.policy
        self.registry = registry
        self.protocol = ServerProtocol(
            extensions=policy.extensions, max_size=policy.max_size, logger=_WEBSOCKETS_LOGGER
        )
        self.conn_id = secrets.token_urlsafe(9)
        self.identity: Identity | None = None
        self.expiry: asyncio.TimerHandle | None = None  # closes it when its token expires
        self.rooms: AbstractSet[str] = frozenset()  # a set of its own from the first join
        self.rate: TokenBucket | None = None  # from the first inbound frame
        self.sender: bytes | None = None  # the encoded `from` field, from the first publish
        self.backlog: collections.deque[bytes] | None = None
        self.backlog_bytes = 0
        # Framed messages of this loop iteration, written together at its end.
        self.pending: list[bytes] | None = None
        self.inbox: collections.deque[str | bytes] | None = None
        self.fragments: list[bytes] | None = None  # a fragmented message being received
        self.busy = False  # a message is being handled (a task awaits it)
        self.paused = False  # the transport asked us to stop writing
        self.reading_paused = False
        self.overflowed = False
        self.compressed = False  # permessage-deflate was negotiated
        self.closing = False  # the server decided to close this connection
        self.server_close_code: int | None = None  # the code it closed with, if it did
        self.lost = False  # the TCP connection is gone
        self.eof = False  # the protocol was told the stream ended
        self.opened_at = 0.0
        self.ping_sent_at = 0.0  # loop time of the unanswered keepalive ping, 0.0 if none
        self.latency = 0.0
        self.request_body: bytes | None = None
        self.request_body_too_large = False
        self._head: bytes | None = None  # a partial HTTP request while its body is read
        self._timer: asyncio.TimerHandle | None = None  # open or close timeout
        self._lost_waiter: asyncio.Future[None] | None = None
        self._flushed: asyncio.Future[None] | None = None

    # Properties

    @property
    def policy(self) -> ConnectionPolicy:
        return self.registry.policy

    @property
    def is_open(self) -> bool:
        return self.protocol.state is _OPEN

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason

    @property
    def remote_address(self) -> object:
        return self.transport.get_extra_info("peername")

    @property
    def sender_json(self) -> bytes:
        """The ``from`` field of this connection's messages, encoded once."""
        sender = self.sender
        if sender is None:
            subject = self.identity.subject if self.identity is not None else self.conn_id
            sender = self.sender = stdlib_dumps(subject)
        return sender

    def bucket(self) -> TokenBucket:
        """The inbound rate limit (full when created, as it would be when idle)."""
        rate = self.rate
        if rate is None:
            policy = self.registry.policy
            rate = self.rate = TokenBucket(
                policy.rate_limit, policy.rate_burst, time.monotonic(), policy.abuse_window
            )
        return rate

    def add_room(self, room: str) -> None:
        rooms = self.rooms
        if not isinstance(rooms, set):
            rooms = self.rooms = set()
        rooms.add(room)

    def discard_room(self, room: str) -> None:
        rooms = self.rooms
        if isinstance(rooms, set):
            rooms.discard(room)
            if not rooms:
                self.rooms = frozenset()

    # asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports implement asyncio.Transport without subclassing it.)
        self.transport = transport = cast(asyncio.Transport, transport)
        policy = self.registry.policy
        transport.set_write_buffer_limits(high=policy.write_limit)
        self.registry.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(
            policy.open_timeout, self._open_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.registry.connections.discard(self)
        protocol = self.protocol
        if not self.eof:  # (receive_eof is idempotent since websockets 14 only)
            self.eof = True
            protocol.receive_eof()
            protocol.events_received()
            protocol.data_to_send()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.backlog = None
        self.backlog_bytes = 0
        self.pending = None
        self.inbox = None
        for future in (self._lost_waiter, self._flushed):
            if future is not None and not future.done():
                future.set_result(None)
        if self.opened_at and not self.busy:
            self._finish()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._flush_backlog()

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol.state is not _CONNECTING:
            if self.overflowed:
                return  # closing a slow consumer: nothing it sends is answered any more
            protocol.receive_data(data)
            self._handle_frames(protocol.events_received())
            self.send_data()
            if not self.overflowed:
                self._check_outbound()
            return
        self._receive_request(data)

    def eof_received(self) -> bool | None:
        if not self.eof:
            self.eof = True
            self.protocol.receive_eof()
            self.send_data()
        return None  # close the transport

    # Outbound

    def send_data(self) -> None:
        """Write what the protocol has to send; half-close when it says the stream ends.

        Coalesced fanout frames go first, so the connection's frames keep their order.
        """
        if self.pending is not None:
            self.write_pending()
        transport = self.transport
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if self._timer is None and self.protocol.close_expected() and not self.lost:
            self._timer = asyncio.get_running_loop().call_later(
                self.registry.policy.close_timeout, self._abort
            )

    def send_frame(self, frame: bytes) -> None:
        """Send one encoded text message now, or queue it; never blocks, never raises."""
        if self.protocol.state is not _OPEN:
            return
        backlog = self.backlog
        if backlog is None:
            if not self.paused:
                self.protocol.send_text(frame)
                self.send_data()
                return
            if self.overflowed:
                return  # closing with 4008; nothing more is queued for it
            if self.pending is not None:
                self.write_pending()  # (earlier frames first)
            backlog = self.backlog = collections.deque()
        backlog.append(frame)
        self.backlog_bytes += len(frame)
        policy = self.registry.policy
        if (
            len(backlog) > policy.queue_messages
            or self.backlog_bytes + self.transport.get_write_buffer_size() > policy.queue_bytes
        ):
            self._overflow()

    def send_framed(self, frame: bytes, wire: bytes) -> None:
        """:meth:`send_frame` for a message the caller framed already (:func:`text_frame`).

        The hub frames a message once for all its members; while a connection is
        open, uncompressed and keeping up, the framed bytes go to its transport
        with the others of this loop iteration (one ``write``, see
        :class:`ConnectionRegistry`), and the protocol does not build the same
        header again (unfragmented, unmasked server frames need no protocol
        state). Otherwise ``frame`` takes the usual way.
        """
        if (
            self.backlog is None
            and not self.paused
            and self.protocol.state is _OPEN
            and not self.compressed
        ):
            pending = self.pending
            if pending is None:
                self.pending = [wire]
                self.registry.schedule_flush(self)
            else:
                pending.append(wire)
            return
        self.send_frame(frame)

    def write_pending(self) -> None:
        """Write the coalesced frames (see :class:`ConnectionRegistry`) in one ``write``."""
        pending = self.pending
        if pending is None:
            return
        self.pending = None
        if self.lost:
            return
        self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _overflow(self) -> None:
        """Drop the backlog of a slow consumer and close it with 4008."""
        if self.overflowed:
            return
        self.overflowed = True
        self.backlog = None
        self.backlog_bytes = 0
        if self.registry.policy.on_slow_consumer is not None:
            self.registry.policy.on_slow_consumer(self)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _check_outbound(self) -> None:
        """Count what the protocol wrote by itself (pongs, close frames) toward the bound."""
        if (
            self.backlog_bytes + self.transport.get_write_buffer_size()
            > self.registry.policy.queue_bytes
        ):
            self._overflow()

    def _flush_backlog(self) -> None:
        if self.pending is not None:
            self.write_pending()
        backlog = self.backlog
        if backlog is None:
            return
        protocol = self.protocol
        while backlog and not self.paused and protocol.state is _OPEN:
            frame = backlog.popleft()
            self.backlog_bytes -= len(frame)
            protocol.send_text(frame)
            self.send_data()
        if not backlog:
            self.backlog = None
            self.backlog_bytes = 0
            if self._flushed is not None and not self._flushed.done():
                self._flushed.set_result(None)

    async def wait_flushed(self) -> None:
        """Return once the backlog is handed to the transport (or the connection ends)."""
        if self.backlog is None or self.protocol.state is not _OPEN:
            return
        if self._flushed is None or self._flushed.done():
            self._flushed = asyncio.get_running_loop().create_future()
        await self._flushed

    # Closing

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection is aborted if the peer
        does not finish it within the close timeout. Idempotent."""
        if self.closing:
            return
        self.closing = True
        self.server_close_code = code
        protocol = self.protocol
        if protocol.state is _OPEN:
            protocol.send_close(code, reason)
            self.send_data()
        elif protocol.state is _CONNECTING:
            self._abort()

    def close_soon(self, code: int, reason: str = "") -> None:
        """:meth:`close` (kept for callers that start a close from a timer)."""
        self.close(code, reason)

    async def close_with(self, code: int, reason: str = "") -> None:
        """Close with ``code`` and return when the TCP connection is gone."""
        self.close(code, reason)
        await self.wait_lost()

    async def wait_lost(self) -> None:
        if self.lost:
            return
        if self._lost_waiter is None:
            self._lost_waiter = asyncio.get_running_loop().create_future()
        await self._lost_waiter

    def abort(self) -> None:
        self._abort()

    def _abort(self) -> None:
        self._timer = None
        if not self.lost:
            self.transport.abort()

    def _open_timed_out(self) -> None:
        self._timer = None
        if self.protocol.state is _CONNECTING and not self.lost:
            self.transport.abort()

    # Keepalive (driven by wsfleet.keepalive.Keepalive, one task per server)

    def keepalive_ping(self, now: float) -> bool:
        """Write a keepalive ping unless one is unanswered; True if one was sent."""
        if self.protocol.state is not _OPEN or self.ping_sent_at:
            return False
        self.protocol.send_ping(KEEPALIVE_PAYLOAD)
        self.send_data()
        self.ping_sent_at = now
        return True

    def keepalive_expired(self, sent_at: float) -> None:
        """The ping sent at ``sent_at`` had its time: close if it is still unanswered.

        Like websockets' own keepalive: fail the connection with 1011, and abort
        the TCP connection if the peer has not closed it within the close timeout.
        """
        if self.ping_sent_at != sent_at or self.protocol.state is not _OPEN:
            return
        self.closing = True
        self.server_close_code = CloseCode.INTERNAL_ERROR
        self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self.send_data()

    # Inbound frames

    def _handle_frames(self, events: Sequence[object]) -> None:
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY:
                if event.fin:
                    self._message(event.data, opcode is _TEXT)
                else:
                    self.fragments = [bytes([opcode is _TEXT]), bytes(event.data)]
            elif opcode is _CONT:
                fragments = self.fragments
                if fragments is None:
                    continue
                fragments.append(bytes(event.data))
                if event.fin:
                    self.fragments = None
                    self._message(b"".join(fragments[1:]), fragments[0] == b"\x01")
            elif opcode is _PING or opcode is _PONG:
                if opcode is _PONG and event.data == KEEPALIVE_PAYLOAD and self.ping_sent_at:
                    self.latency = asyncio.get_running_loop().time() - self.ping_sent_at
                    self.ping_sent_at = 0.0
                # Control frames count toward the rate limit like messages do. (A
                # refused ping still got its pong: that pong counts as outbound.)
                bucket = self.bucket()
                if not bucket.take(time.monotonic()) and bucket.abusive:
                    self.close(CloseCode.RATE_LIMIT_ABUSE, "rate limit abuse")

    def _message(self, data: bytes | bytearray | memoryview, text: bool) -> None:
        if self.closing:
            # Keep reading while the close runs (the peer's close frame must get in),
            # but answer nothing more.
            return
        message: str | bytes
        if text:
            try:
                message = bytes(data).decode()
            except UnicodeDecodeError as exc:
                self.protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                self.closing = True
                self.server_close_code = CloseCode.INVALID_DATA
                return
        else:
            message = bytes(data)
        if self.busy:
            inbox = self.inbox
            if inbox is None:
                inbox = self.inbox = collections.deque()
            inbox.append(message)
            if len(inbox) >= self.registry.policy.max_inbox and not self.reading_paused:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        pending = self._dispatch(message)
        if pending is not None:
            self.busy = True
            _spawn(self._work(pending))

    def _dispatch(self, message: str | bytes) -> Awaitable[None] | None:
        try:
            return self.registry.handler.message(self, message)
        except Exception:
            logger.exception("message handler failed", extra={"fields": {"conn": self.conn_id}})
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
            return None

    async def _work(self, pending: Awaitable[None]) -> None:
        """Await a message's handling, then hand over the messages that waited."""
        try:
            while True:
                try:
                    await pending
                except Exception:
                    logger.exception(
                        "message handler failed", extra={"fields": {"conn": self.conn_id}}
                    )
                    self.close(CloseCode.INTERNAL_ERROR, "internal error")
                next_pending = None
                while next_pending is None:
                    inbox = self.inbox
                    if not inbox or self.closing:
                        return
                    message = inbox.popleft()
                    if not inbox:
                        self.inbox = None
                    if self.reading_paused and not self.lost:
                        self.reading_paused = False
                        self.transport.resume_reading()
                    next_pending = self._dispatch(message)
                pending = next_pending
        finally:
            self.busy = False
            self.inbox = None
            if self.reading_paused and not self.lost:
                self.reading_paused = False
                self.transport.resume_reading()
            if self.lost:
                self._finish()

    def _finish(self) -> None:
        """Tell the handler once the connection is gone and nothing of it is handled.

        (Called once: from ``connection_lost``, or after it by the task handling
        the connection's last message.)"""
        if self.opened_at:
            self.registry.handler.closed(self)

    # The opening handshake

    def _receive_request(self, data: bytes) -> None:
        """Hand the request head to the protocol, its body (for POST /api/publish) aside.

        The Sans-I/O parser serves handshakes only and refuses a request with a
        body, so the body is kept in ``request_body`` and the head goes on without
        its Content-Length. Bytes after the head (frames a client sent ahead of
        the 101) wait in ``_head`` until the connection is open.
        """
        head = data if self._head is None else self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD:  # let the protocol refuse oversized headers
                self._head = None
                self._feed_request(head)
            else:
                self._head = head
            return
        rest = end + 4
        length = _content_length(head[:end])
        if length is not None:
            if length > self.registry.policy.max_request_body:
                self.request_body_too_large = True
                self._head = None
                self._feed_request(_strip_content_length(head[:end]) + b"\r\n\r\n")
                return
            if len(head) - rest < length:
                self._head = head  # wait for the rest of the body
                return
            self.request_body = bytes(head[rest : rest + length])
            head = _strip_content_length(head[:end]) + b"\r\n\r\n" + head[rest + length :]
            end = head.find(b"\r\n\r\n")
            rest = end + 4
        self._head = head[rest:] or None
        self._feed_request(head[:rest])

    def _feed_request(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                self._process_request(event)
                return
        self.send_data()

    def _process_request(self, request: Request) -> None:
        try:
            answer = self.registry.handler.process_request(self, request)
        except Exception:
            logger.exception("request handler failed")
            answer = self.protocol.reject(500, "Failed to open a WebSocket connection.\n")
        if answer is None or isinstance(answer, Response):
            self._respond(request, answer)
        else:
            _spawn(self._respond_later(request, answer))

    async def _respond_later(self, request: Request, answer: Awaitable[Response | None]) -> None:
        try:
            response = await answer
        except Exception:
            logger.exception("request handler failed")
            response = self.protocol.reject(500, "Failed to open a WebSocket connection.\n")
        if not self.lost:
            self._respond(request, response)

    def _respond(self, request: Request, response: Response | None) -> None:
        protocol = self.protocol
        if response is None:
            response = protocol.accept(request)
        protocol.send_response(response)
        if protocol.state is not _OPEN:
            self.send_data()
            self._head = None
            return  # a plain HTTP response or a refused handshake: the stream ends
        # The 101 waits in ``pending`` for what the handler sends on opening (the
        # welcome frame, through send_framed): both leave in one write, one system
        # call fewer per connection. (Anything sent through the protocol meanwhile
        # calls send_data, which writes ``pending`` first, so the order holds.)
        self.pending = protocol.data_to_send() or None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if "Sec-WebSocket-Extensions" in response.headers:
            self.compressed = True
        else:
            # The open connection gets a protocol of its own, without the request.
            self.protocol = ServerProtocol(
                state=_OPEN, max_size=self.registry.policy.max_size, logger=_WEBSOCKETS_LOGGER
            )
        self.opened_at = time.monotonic()
        try:
            self.registry.handler.opened(self)
        finally:
            self.write_pending()
        ahead, self._head = self._head, None
        if ahead and not self.lost:
            self.data_received(ahead)


class TokenBucket:
    """Inbound rate limit: ``rate`` frames per second with bursts of ``burst``.

    Sustained abuse (PROTOCOL.md, close 4029) is more than ``burst`` refused frames
    within ``window`` seconds; the times of the last ``burst + 1`` refusals are kept,
    only by connections that had a frame refused.
    """

    __slots__ = ("burst", "rate", "refilled_at", "refused", "tokens", "window")

    def __init__(self, rate: float, burst: int, now: float, window: float = 10.0) -> None:
        self.rate = rate
        self.burst = burst
        self.window = window
        self.tokens = float(burst)
        self.refilled_at = now
        self.refused: collections.deque[float] | None = None

    def take(self, now: float) -> bool:
        """True if a frame may be handled now; a refusal is recorded."""
        tokens = min(float(self.burst), self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        refused = self.refused
        if refused is None:
            refused = self.refused = collections.deque(maxlen=self.burst + 1)
        refused.append(now)
        return False

    @property
    def abusive(self) -> bool:
        """More than ``burst`` frames were refused within ``window`` seconds."""
        refused = self.refused
        return (
            refused is not None
            and len(refused) > self.burst
            and refused[-1] - refused[0] <= self.window
        )


def _content_length(head: bytes) -> int | None:
    """The Content-Length of a request head, when it has a non-zero one."""
    if _CONTENT_LENGTH.search(head) is None:
        return None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
            return length if length > 0 else None
    return None


def _strip_content_length(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [lines[0]] + [
        line for line in lines[1:] if line.partition(b":")[0].strip().lower() != b"content-length"
    ]
    return b"\r\n".join(kept)
