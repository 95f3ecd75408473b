"""One WebSocket connection from ``welcome`` to close: answer its messages.

:class:`Session` is the connection layer's handler (:class:`ConnectionHandler`):
the connection calls it when it opens, for each message, and once when it is gone.
Messages of one connection are handled one at a time, in order: a message that
must wait for Redis (a publish, a join) is returned as an awaitable, and the
connection hands over its next message only once that is done, so a client's
messages are stored in the order it sent them and its acks come back in that order.
Answers go through :meth:`FleetConnection.send_frame`, which never blocks, so a
client that stops reading cannot stall its own messages either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from websockets.http11 import Request

from wsfleet import codec
from wsfleet.broker import BrokerUnavailable, NotReplicated
from wsfleet.connection import CloseCode, FleetConnection, RequestAnswer, text_frame
from wsfleet.context import OVERLOADED_MESSAGE, ServerContext
from wsfleet.logs import log_event
from wsfleet.protocol import (
    ErrorCode,
    Join,
    Leave,
    Ping,
    ProtocolError,
    Publish,
    echo_fields,
    encode,
    encode_error,
    parse_frame,
)

__all__ = ["Session", "sender_json"]

logger = logging.getLogger("wsfleet.session")


class Session:
    """The handler of every connection of one server (see the module docstring)."""

    def __init__(
        self,
        context: ServerContext,
        requests: Callable[[FleetConnection, Request], RequestAnswer],
    ) -> None:
        self.context = context
        self.requests = requests
        # ws_connected_clients is read from the count at each scrape instead of
        # being incremented and decremented (under a lock) per connection.
        context.metrics.connected_clients.set_function(lambda: context.open_connections)
        # The welcome frame is the same for every connection but its id: encoded
        # once, around the id (a URL-safe token, which JSON needs not escape).
        welcome = codec.dumps(
            {
                "type": "welcome",
                "conn": "",
                "server": context.instance_id,
                "heartbeat": _seconds(context.settings.ping_interval),
            }
        )
        head, _, tail = welcome.partition(b'"conn":""')
        self._welcome_head = head + b'"conn":"'
        self._welcome_tail = b'"' + tail

    def process_request(self, connection: FleetConnection, request: Request) -> RequestAnswer:
        return self.requests(connection, request)

    def opened(self, connection: FleetConnection) -> None:
        """Count and log the connection, arm its token's expiry, send ``welcome``."""
        context = self.context
        context.open_connections += 1
        if logger.isEnabledFor(logging.INFO):
            # (The transport looks the peer address up only when it is logged.)
            remote = connection.remote_address
            log_event(
                logger,
                logging.INFO,
                "connection open",
                event="open",
                conn=connection.conn_id,
                user=connection.identity.subject if connection.identity else None,
                remote=f"{remote[0]}:{remote[1]}" if isinstance(remote, tuple) else str(remote),
            )
        connection.expiry = _close_when_token_expires(connection)
        welcome = self._welcome_head + connection.conn_id.encode() + self._welcome_tail
        # Framed here, so it joins the 101 response in the connection's pending write.
        connection.send_framed(welcome, text_frame(welcome))
        context.metrics.outbound["welcome"].inc()

    def message(self, connection: FleetConnection, data: str | bytes) -> Awaitable[None] | None:
        """Answer one message now, or return the awaitable that answers it."""
        started = time.perf_counter()
        pending = handle_frame(self.context, connection, data)
        if pending is None:
            self.context.metrics.message_duration.observe(time.perf_counter() - started)
            _close_if_abusive(connection)
            return None
        return self._finish_message(connection, pending, started)

    async def _finish_message(
        self, connection: FleetConnection, pending: Coroutine[Any, Any, None], started: float
    ) -> None:
        try:
            await pending
        except ProtocolError as error:
            send_error(self.context, connection, error)
        finally:
            self.context.metrics.message_duration.observe(time.perf_counter() - started)
        _close_if_abusive(connection)

    def closed(self, connection: FleetConnection) -> None:
        """Leave every room, uncount and log the connection."""
        context = self.context
        if connection.expiry is not None:
            connection.expiry.cancel()
            connection.expiry = None
        context.hub.leave_all(connection)
        context.open_connections -= 1
        if connection.server_close_code is not None:
            context.metrics.server_closes.labels(str(connection.server_close_code)).inc()
        log_event(
            logger,
            logging.INFO,
            "connection closed",
            event="close",
            conn=connection.conn_id,
            code=connection.close_code,
            reason=connection.close_reason or None,
            seconds=round(time.monotonic() - connection.opened_at, 3),
        )


def _close_if_abusive(connection: FleetConnection) -> None:
    if connection.rate is not None and connection.rate.abusive:
        connection.close(CloseCode.RATE_LIMIT_ABUSE, "rate limit abuse")


def _close_when_token_expires(connection: FleetConnection) -> asyncio.TimerHandle | None:
    """PROTOCOL.md: when the JWT's ``exp`` passes, the connection is closed with 4001."""
    identity = connection.identity
    if identity is None or identity.expires_at is None:
        return None
    loop = asyncio.get_running_loop()
    delay = max(0.0, identity.expires_at - time.time())
    return loop.call_at(
        loop.time() + delay, connection.close, CloseCode.TOKEN_EXPIRED, "token expired"
    )


def _seconds(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def send(
    context: ServerContext, connection: FleetConnection, kind: str, frame: dict[str, object]
) -> None:
    connection.send_frame(encode(frame))
    context.metrics.outbound[kind].inc()


def send_error(context: ServerContext, connection: FleetConnection, error: ProtocolError) -> None:
    connection.send_frame(encode_error(error))
    context.metrics.outbound["error"].inc()


def handle_frame(
    context: ServerContext, connection: FleetConnection, data: str | bytes
) -> Coroutine[Any, Any, None] | None:
    """Validate and answer one inbound frame; errors become ``error`` frames.

    A publish or a join returns the coroutine that finishes it (it may raise
    :class:`ProtocolError` too); everything else is answered before returning.
    """
    metrics = context.metrics
    try:
        # Every frame counts toward the rate limit, binary ones too.
        if not connection.bucket().take(time.monotonic()):
            metrics.inbound_invalid.inc()
            request_id, room = echo_fields(data) if isinstance(data, str) else (None, None)
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"more than {context.settings.rate_limit:g} frames per second",
                request_id,
                room,
            )
        if isinstance(data, bytes):
            metrics.inbound_invalid.inc()
            raise ProtocolError(ErrorCode.UNSUPPORTED, "binary frames are not supported")
        try:
            command = parse_frame(data, context.limits)
        except ProtocolError:
            metrics.inbound_invalid.inc()
            raise
        if isinstance(command, Publish):
            metrics.inbound["message"].inc()
            _check_room_allowed(connection, command.room, command.request_id)
            return handle_publish(context, connection, command)
        if isinstance(command, Join):
            metrics.inbound["join"].inc()
            check_join(context, connection, command)
            return handle_join(context, connection, command)
        if isinstance(command, Leave):
            metrics.inbound["leave"].inc()
            context.hub.leave(connection, command.room)
            send(context, connection, "left", {"type": "left", "room": command.room})
        elif isinstance(command, Ping):
            metrics.inbound["ping"].inc()
            send(context, connection, "pong", {"type": "pong", "id": command.request_id})
    except ProtocolError as error:
        send_error(context, connection, error)
    return None


def _check_room_allowed(connection: FleetConnection, room: str, request_id: str | None) -> None:
    identity = connection.identity
    if identity is not None and not identity.may_use(room):
        raise ProtocolError(
            ErrorCode.FORBIDDEN, "your token does not allow this room", request_id, room
        )


def check_join(context: ServerContext, connection: FleetConnection, join: Join) -> None:
    _check_room_allowed(connection, join.room, None)
    if join.room not in connection.rooms and len(connection.rooms) >= context.settings.max_rooms:
        raise ProtocolError(
            ErrorCode.TOO_MANY_ROOMS,
            f"a connection may be in at most {context.settings.max_rooms} rooms",
            room=join.room,
        )


async def handle_join(context: ServerContext, connection: FleetConnection, join: Join) -> None:
    try:
        await context.hub.join(connection, join.room, join.since, join.epoch)
    except BrokerUnavailable:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE, "the room cannot be joined right now; retry", room=join.room
        ) from None


async def handle_publish(
    context: ServerContext, connection: FleetConnection, publish: Publish
) -> None:
    _check_room_allowed(connection, publish.room, publish.request_id)
    if context.draining:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            "this instance is shutting down; retry after reconnecting",
            publish.request_id,
            publish.room,
        )
    if not context.publish_admitted():
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            OVERLOADED_MESSAGE,
            publish.request_id,
            publish.room,
        )
    context.publish_started()
    try:
        offset = await context.broker.publish(
            publish.room, connection.sender_json, publish.content_json
        )
    except NotReplicated:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            "the message was not confirmed on enough Redis replicas; it may still be "
            "delivered; retry",
            publish.request_id,
            publish.room,
        ) from None
    except BrokerUnavailable:
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            "the message was not stored or delivered; retry",
            publish.request_id,
            publish.room,
        ) from None
    finally:
        context.publish_finished()
    send(
        context,
        connection,
        "ack",
        {"type": "ack", "id": publish.request_id, "room": publish.room, "offset": offset},
    )


def sender_json(subject: str) -> bytes:
    """The ``from`` field of a connection's messages, encoded once at the handshake.

    It lives as long as the connection, so the standard library encodes it: the
    bytes orjson returns sit in a 4 KiB allocation whatever their length, which
    was a quarter of an idle connection's memory.
    """
    return codec.stdlib_dumps(subject)
