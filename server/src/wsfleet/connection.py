"""Per-connection state: identity, rooms, inbound rate limit and a bounded outbound queue.

:class:`FleetConnection` extends websockets' ``ServerConnection`` rather than
wrapping it, so an idle connection costs no extra object, task or buffer beyond
what websockets keeps, and it trims that too (about 17 KB -> 5.5 KB of RSS per idle
connection): websockets' constructor is replaced so that options and defaults live on
the class and the instance ``__dict__`` stays in CPython's compact form; the
handshake request and response are dropped once the connection is open; the frame
queue, the drain waiters, the pending pings, the room set and the rate limit are
created when first needed; and the server pings from one task
(:mod:`wsfleet.keepalive`) instead of a keepalive task per connection.

Outbound frames never wait. While the socket keeps up, a frame goes straight to
the transport, the way ``websockets.broadcast`` writes. When the transport's write
buffer passes its high-water mark (asyncio calls ``pause_writing``), frames wait in
a per-connection backlog of references to the shared, already-encoded bytes, and
``resume_writing`` flushes it. Every outbound byte counts toward the limit: the
backlog plus the transport's write buffer, which also holds what websockets writes
by itself (pongs answering the client's pings, close frames). Over the byte or
message limit means a slow consumer: the backlog is dropped, the connection's
further input is ignored (so a client that sends pings and reads nothing makes no
more pongs) and it is closed with 4008, so memory stays bounded while every other
member keeps receiving at full rate.

Every inbound frame counts toward the rate limit (:class:`TokenBucket`): messages
(text or binary) in :mod:`wsfleet.session`, ping and pong frames here, as
websockets hands them over in ``process_event``. More than ``rate_burst`` frames
refused within ``abuse_window`` seconds is abuse: close 4029.
"""

from __future__ import annotations

import asyncio
import collections
import random
import secrets
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import SimpleQueue
from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.typing import DataLike, LoggerLike

from wsfleet.auth import Identity
from wsfleet.codec import stdlib_dumps

__all__ = ["CloseCode", "ConnectionPolicy", "FleetConnection", "TokenBucket", "text_frame"]


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
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008
    RATE_LIMIT_ABUSE = 4029


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """Limits and hooks shared by every connection of one server."""

    queue_bytes: int = 1024 * 1024
    queue_messages: int = 1000
    rate_limit: float = 50.0
    rate_burst: int = 100
    abuse_window: float = 10.0  # more than rate_burst refused frames within it: 4029
    close_timeout: float = 5.0
    max_request_body: int = 64 * 1024
    on_slow_consumer: Callable[[FleetConnection], None] | None = None


_OPEN = State.OPEN
_PING = Opcode.PING
_PONG = Opcode.PONG

_FRAME_PARSER = Protocol.parse.__code__
_AT_EOF = StreamReader.at_eof.__code__
_NO_PINGS: dict[bytes, tuple[asyncio.Future[float], float]] = {}
_NO_WAITERS: collections.deque[asyncio.Future[None]] = collections.deque(maxlen=0)

T = TypeVar("T")


class _LazyQueue(SimpleQueue[T]):
    """websockets' frame queue, holding a deque only while it holds frames."""

    queue: collections.deque[T]

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.get_waiter: asyncio.Future[None] | None = None
        self.queue = _NO_FRAMES  # type: ignore[assignment]

    def put(self, item: T) -> None:
        if self.queue is _NO_FRAMES:
            self.queue = collections.deque()
        super().put(item)

    async def get(self, block: bool = True) -> T:
        # SimpleQueue.get, inlined rather than awaited: a coroutine frame less
        # for every connection waiting for its next frame.
        if not self.queue:
            if not block:
                raise EOFError("stream of frames ended")
            assert self.get_waiter is None, "cannot call get() concurrently"
            self.get_waiter = self.loop.create_future()
            try:
                await self.get_waiter
            finally:
                self.get_waiter.cancel()
                self.get_waiter = None
        item = self.queue.popleft()
        if not self.queue:
            self.queue = _NO_FRAMES  # type: ignore[assignment]
        return item

    def put_back(self, items: Sequence[T]) -> None:
        if self.queue is _NO_FRAMES:
            self.queue = collections.deque()
        super().put_back(items)


_NO_FRAMES: collections.deque[object] = collections.deque(maxlen=0)

# Payload of the server's keepalive pings (see wsfleet.keepalive), one per process.
KEEPALIVE_PAYLOAD = struct.pack("!I", random.getrandbits(32))


class FleetConnection(ServerConnection):
    """A WebSocket connection with wsfleet's state; see the module docstring."""

    policy: ClassVar[ConnectionPolicy] = ConnectionPolicy()

    # Rarely used state lives on the class until a connection needs its own value,
    # which keeps idle connections small.
    backlog: collections.deque[bytes] | None = None
    backlog_bytes: int = 0
    overflowed: bool = False
    closing: bool = False  # the server decided to close this connection
    request_body: bytes | None = None
    request_body_too_large: bool = False
    identity: Identity | None = None
    _flushed: asyncio.Future[None] | None = None
    _head: bytes | None = None  # partial HTTP request while a body is being read
    ping_sent_at: float = 0.0  # loop time of the unanswered keepalive ping, 0.0 if none
    rooms: AbstractSet[str] = frozenset()  # a set of its own from the first join
    rate: TokenBucket | None = None  # from the first inbound frame
    _sender_json: bytes | None = None  # from the first publish

    # websockets' Connection state that is the same for (almost) every connection
    # lives on the class too: see __init__.
    ping_interval: float | None = None
    ping_timeout: float | None = None
    close_timeout: float | None = 10
    max_queue_high: int | None = 16
    max_queue_low: int | None = None
    write_limit_high: int = 2**15
    write_limit_low: int | None = None
    close_deadline: float | None = None
    send_in_progress: asyncio.Future[None] | None = None
    latency: float = 0.0
    keepalive_task: asyncio.Task[None] | None = None
    connection_exc: BaseException | None = None
    paused: bool = False
    # Empty and shared until used: ping() and drain() give a connection its own.
    pending_pings: dict[bytes, tuple[asyncio.Future[float], float]] = _NO_PINGS
    drain_waiters: collections.deque[asyncio.Future[None]] = _NO_WAITERS

    def __init__(
        self,
        protocol: ServerProtocol,
        server: Server,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        max_queue: int | tuple[int | None, int | None] | None = 16,
        write_limit: int | tuple[int, int | None] = 2**15,
    ) -> None:
        """websockets 17's ``Connection.__init__`` and ``ServerConnection.__init__``, slim.

        They are not called: they set ~30 attributes, most of them the same for every
        connection, and past 29 instance attributes CPython 3.11 gives up its compact
        shared-key ``__dict__`` (~0.3 KB) for a regular dict (~1.7 KB). Here only
        what differs per connection goes on the instance; the rest are class
        attributes above (an option differing from the class's goes on the
        instance), the protocol's logger is not wrapped in a per-connection
        ``LoggerAdapter``, and ``id``, ``logger``, ``debug`` and ``loop`` are
        properties. ``tests/test_connection.py`` checks this against websockets.
        """
        self.protocol = protocol
        self.server = server
        loop = asyncio.get_running_loop()
        self.request: Request | None = None
        self.response: Response | None = None
        self.request_rcvd: asyncio.Future[None] = loop.create_future()
        self.connection_lost_waiter: asyncio.Future[None] = loop.create_future()
        if isinstance(max_queue, int) or max_queue is None:
            max_queue_high, max_queue_low = max_queue, None
        else:
            max_queue_high, max_queue_low = max_queue
        if isinstance(write_limit, int):
            write_limit_high, write_limit_low = write_limit, None
        else:
            write_limit_high, write_limit_low = write_limit
        options = (
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("close_timeout", close_timeout),
            ("max_queue_high", max_queue_high),
            ("max_queue_low", max_queue_low),
            ("write_limit_high", write_limit_high),
            ("write_limit_low", write_limit_low),
        )
        cls = type(self)
        for name, value in options:
            if getattr(cls, name) != value:
                setattr(self, name, value)
        # wsfleet's own state. Attributes set later in a connection's usual life
        # are set here first, so that every connection adds them in the same order.
        self.conn_id = secrets.token_urlsafe(9)
        self.opened_at = 0.0
        self.ping_sent_at = 0.0
        self.latency = 0.0

    @property
    def id(self) -> uuid.UUID:  # type: ignore[override]
        return self.protocol.id

    @property
    def logger(self) -> LoggerLike:  # type: ignore[override]
        return self.protocol.logger

    @property
    def debug(self) -> bool:  # type: ignore[override]
        return self.protocol.debug

    @property
    def loop(self) -> asyncio.AbstractEventLoop:  # type: ignore[override]
        return asyncio.get_running_loop()

    def opened(self) -> None:
        """The handshake is over: drop what only the handshake needed.

        The request and its headers (~2 KB) are not read after the upgrade;
        ``process_event`` below no longer needs them to tell the handshake request
        from frames. Besides ``self.request``, the sans-I/O protocol's parser
        holds the request as a local variable for the connection's whole life: it
        is a generator that parsed the request and then runs the frame parser.
        While that frame parser waits between two frames (the usual case, as
        clients wait for ``welcome``), it is replaced by a fresh frame parser in
        the same state, which lets the request go.
        """
        self.opened_at = time.monotonic()
        self.request = None
        self.response = None
        del self.request_rcvd  # awaited only by the handshake
        protocol = self.protocol
        frames = getattr(protocol.parser, "gi_yieldfrom", None)
        waiting = getattr(frames, "gi_yieldfrom", None)
        if (
            getattr(frames, "gi_code", None) is _FRAME_PARSER
            and getattr(waiting, "gi_code", None) is _AT_EOF
            and not protocol.reader.buffer
        ):
            parser = Protocol.parse(protocol)
            next(parser)  # up to the same point: waiting for the next frame
            protocol.parser = parser

    def process_event(self, event: Event) -> None:
        if self.protocol.state is State.CONNECTING:
            super().process_event(event)  # the request, or frames sent ahead of the 101
            return
        opcode = getattr(event, "opcode", None)
        if opcode is _PING or opcode is _PONG:
            # Control frames count toward the rate limit like messages do. (A refused
            # ping still got its pong from websockets: that pong counts as outbound.)
            bucket = self.bucket()
            if not bucket.take(time.monotonic()) and bucket.abusive:
                self.close_soon(CloseCode.RATE_LIMIT_ABUSE, "rate limit abuse")
        Connection.process_event(self, event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A queue of frames without a 624-byte deque block while it is empty.
        self.recv_messages.frames = _LazyQueue()

    async def ping(self, data: DataLike | None = None) -> Awaitable[float]:
        if self.pending_pings is _NO_PINGS:
            self.pending_pings = {}
        return await super().ping(data)

    async def drain(self) -> None:
        # websockets' drain(), with a deque of waiters of its own only when it waits.
        if self.transport.is_closing():
            await asyncio.sleep(0)
        if self.paused:
            if self.drain_waiters is _NO_WAITERS:
                self.drain_waiters = collections.deque()
            waiter = self.loop.create_future()
            self.drain_waiters.append(waiter)
            try:
                await waiter
            finally:
                self.drain_waiters.remove(waiter)

    # Per-connection state created when first needed

    @property
    def sender_json(self) -> bytes:
        """The ``from`` field of this connection's messages, encoded once."""
        sender = self._sender_json
        if sender is None:
            subject = self.identity.subject if self.identity is not None else self.conn_id
            sender = self._sender_json = stdlib_dumps(subject)
        return sender

    def bucket(self) -> TokenBucket:
        """The inbound rate limit (full when created, as it would be when idle)."""
        rate = self.rate
        if rate is None:
            policy = self.policy
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

    # Outbound

    def send_frame(self, frame: bytes) -> None:
        """Send one encoded text frame now, or queue it; never blocks, never raises."""
        if self.protocol.state is not _OPEN:
            return
        backlog = self.backlog
        if backlog is None:
            if not self.paused:
                try:
                    self.protocol.send_text(frame)
                    self.send_data()
                except Exception:  # noqa: S110 - a broken transport reports itself via connection_lost
                    pass
                return
            if self.overflowed:
                return  # closing with 4008; nothing more is queued for it
            backlog = self.backlog = collections.deque()
        backlog.append(frame)
        self.backlog_bytes += len(frame)
        if (
            len(backlog) > self.policy.queue_messages
            or self.backlog_bytes + self.transport.get_write_buffer_size() > self.policy.queue_bytes
        ):
            self._overflow()

    def send_framed(self, frame: bytes, wire: bytes) -> None:
        """:meth:`send_frame` for a frame the caller framed already (:func:`text_frame`).

        The hub frames a message once for all its members; while a connection is
        open, uncompressed and keeping up, the framed bytes go straight to its
        transport: one ``write`` and no trip through the sans-I/O protocol, which
        would build the same header again. Otherwise ``frame`` takes the usual way.
        """
        protocol = self.protocol
        if (
            self.backlog is None
            and not self.paused
            and protocol.state is _OPEN
            and not protocol.extensions
        ):
            try:  # noqa: SIM105 - contextlib.suppress costs more on this hot path
                self.transport.write(wire)
            except Exception:  # noqa: S110 - a broken transport reports itself via connection_lost
                pass
            return
        self.send_frame(frame)

    def _overflow(self) -> None:
        """Drop the backlog of a slow consumer and close it with 4008."""
        if self.overflowed:
            return
        self.overflowed = True
        self.backlog = None
        self.backlog_bytes = 0
        if self.policy.on_slow_consumer is not None:
            self.policy.on_slow_consumer(self)
        self.close_soon(CloseCode.SLOW_CONSUMER, "slow consumer")

    def _check_outbound(self) -> None:
        """Count what websockets wrote by itself (pongs, close frames) toward the bound."""
        if (
            not self.overflowed
            and self.backlog_bytes + self.transport.get_write_buffer_size()
            > self.policy.queue_bytes
        ):
            self._overflow()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._flush_backlog()

    def _flush_backlog(self) -> None:
        backlog = self.backlog
        if backlog is None:
            return
        protocol = self.protocol
        while backlog and not self.paused and protocol.state is _OPEN:
            frame = backlog.popleft()
            self.backlog_bytes -= len(frame)
            try:
                protocol.send_text(frame)
                self.send_data()
            except Exception:
                break
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
            self._flushed = self.loop.create_future()
        await asyncio.wait(
            [self._flushed, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED
        )

    async def close_with(self, code: int, reason: str = "") -> None:
        """Close with ``code``; abort the TCP connection if the peer does not cooperate.

        ``close()`` waits for the write buffer to drain before its own timeout starts,
        so a peer that reads nothing would keep it waiting forever without this bound.
        """
        try:
            async with asyncio.timeout(self.policy.close_timeout):
                await self.close(code, reason)
        except TimeoutError:
            self.transport.abort()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Start :meth:`close_with` without waiting for it (from synchronous code)."""
        if self.closing:
            return
        self.closing = True
        task = self.loop.create_task(self.close_with(code, reason))
        _background_tasks.add(task)
        task.add_done_callback(_background_tasks.discard)

    # Keepalive (driven by wsfleet.keepalive.Keepalive, one task per server)

    def keepalive_ping(self, now: float) -> bool:
        """Write a keepalive ping unless one is unanswered; True if one was sent."""
        if self.protocol.state is not _OPEN or self.ping_sent_at:
            return False
        try:
            self.protocol.send_ping(KEEPALIVE_PAYLOAD)
            self.send_data()
        except Exception:  # a broken transport reports itself via connection_lost
            return False
        self.ping_sent_at = now
        return True

    def acknowledge_pings(self, data: bytes) -> None:
        if data == KEEPALIVE_PAYLOAD and self.ping_sent_at:
            self.latency = self.loop.time() - self.ping_sent_at
            self.ping_sent_at = 0.0
            return
        super().acknowledge_pings(data)

    def keepalive_expired(self, sent_at: float) -> None:
        """The ping sent at ``sent_at`` had its time: close if it is still unanswered.

        Like websockets' own keepalive: fail the connection with 1011, and abort
        the TCP connection if the peer has not closed it within the close timeout.
        """
        if self.ping_sent_at != sent_at or self.protocol.state is not _OPEN:
            return
        self.closing = True
        try:
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.send_data()
        except Exception:  # noqa: S110 - aborted below anyway
            pass
        self.loop.call_later(self.policy.close_timeout, self._abort_unless_closed)

    def _abort_unless_closed(self) -> None:
        if not self.connection_lost_waiter.done():
            self.transport.abort()

    # HTTP request bodies (for POST /api/publish)

    def data_received(self, data: bytes) -> None:
        """Take the body of an HTTP request off the stream before websockets parses it.

        websockets' HTTP parser refuses requests with a body (it serves handshakes
        only), so the body is kept aside in ``request_body`` and the request is handed
        on without it. Only the opening request is inspected; frames go straight on.
        """
        if self.protocol.state is not State.CONNECTING:
            if self.overflowed:
                return  # closing a slow consumer: nothing it sends is answered any more
            super().data_received(data)
            self._check_outbound()
            return
        head = data if self._head is None else self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 64 * 1024:  # let websockets reject oversized headers
                self._head = None
                super().data_received(head)
            else:
                self._head = head
            return
        length = _content_length(head[:end])
        if length is None:
            if self._head is not None:  # (not set at all in the usual case)
                self._head = None
            super().data_received(head)
            return
        if length > self.policy.max_request_body:
            self.request_body_too_large = True
            self._head = None
            super().data_received(_strip_content_length(head[:end]) + b"\r\n\r\n")
            return
        body_start = end + 4
        if len(head) - body_start < length:
            self._head = head  # wait for the rest of the body
            return
        self._head = None
        self.request_body = bytes(head[body_start : body_start + length])
        super().data_received(_strip_content_length(head[:end]) + b"\r\n\r\n")


_background_tasks: set[asyncio.Task[None]] = set()


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
