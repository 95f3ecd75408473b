"""Per-connection state: identity, rooms, inbound rate limit and a bounded outbound queue.

:class:`FleetConnection` extends websockets' ``ServerConnection`` rather than
wrapping it, so an idle connection costs no extra object, task or buffer beyond
what websockets already keeps.

Outbound frames never wait. While the socket keeps up, a frame goes straight to
the transport, the way ``websockets.broadcast`` writes. When the transport's write
buffer passes its high-water mark (asyncio calls ``pause_writing``), frames wait in
a per-connection backlog of references to the shared, already-encoded bytes, and
``resume_writing`` flushes it. A backlog over its byte or message limit means a
slow consumer: it is dropped and the connection closed with 4008, so memory stays
bounded while every other member keeps receiving at full rate.
"""

from __future__ import annotations

import asyncio
import collections
import random
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from wsfleet.auth import Identity

__all__ = ["CloseCode", "ConnectionPolicy", "FleetConnection", "TokenBucket"]


class CloseCode:
    """Close codes of PROTOCOL.md."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    SLOW_CONSUMER = 4008
    RATE_LIMIT_ABUSE = 4029


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """Limits and hooks shared by every connection of one server."""

    queue_bytes: int = 1024 * 1024
    queue_messages: int = 1000
    rate_limit: float = 50.0
    rate_burst: int = 100
    close_timeout: float = 5.0
    max_request_body: int = 64 * 1024
    on_slow_consumer: Callable[[FleetConnection], None] | None = None


_OPEN = State.OPEN

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn_id = secrets.token_urlsafe(9)
        self.sender_json = b""
        self.rooms: set[str] = set()
        self.writing_paused = False
        self.rate = TokenBucket(self.policy.rate_limit, self.policy.rate_burst, time.monotonic())
        self.opened_at = 0.0

    # Outbound

    def send_frame(self, frame: bytes) -> None:
        """Send one encoded text frame now, or queue it; never blocks, never raises."""
        if self.protocol.state is not _OPEN:
            return
        backlog = self.backlog
        if backlog is None:
            if not self.writing_paused:
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
            or self.backlog_bytes > self.policy.queue_bytes
        ):
            self._overflow()

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

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writing_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writing_paused = False
        self._flush_backlog()

    def _flush_backlog(self) -> None:
        backlog = self.backlog
        if backlog is None:
            return
        protocol = self.protocol
        while backlog and not self.writing_paused and protocol.state is _OPEN:
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
            super().data_received(data)
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

    Every refused frame adds a strike and every accepted one removes a strike, so a
    client that only bursts now and then never accumulates them, while one that keeps
    sending faster than the limit reaches ``burst`` strikes: sustained abuse.
    """

    __slots__ = ("burst", "rate", "refilled_at", "strikes", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.refilled_at = now
        self.strikes = 0

    def take(self, now: float) -> bool:
        """True if a frame may be handled now."""
        tokens = min(float(self.burst), self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            if self.strikes:
                self.strikes -= 1
            return True
        self.tokens = tokens
        self.strikes += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.strikes >= self.burst


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
