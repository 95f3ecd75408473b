"""HTTP on the WebSocket port: handshake checks and the plain endpoints.

The connection layer hands every request to :func:`make_request_handler`'s function
before any upgrade. ``/ws`` goes through the handshake checks of PROTOCOL.md and on
to the upgrade (None); ``/health``, ``/live`` and ``/metrics`` are answered at once;
``/api/publish`` returns a coroutine (it waits for Redis); every other path is a 404.
Responses are built with the Sans-I/O protocol's ``reject`` and then given our
content type and headers, as websockets documents.
"""

from __future__ import annotations

import http
import logging
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request, Response

from wsfleet import codec
from wsfleet.auth import AuthError, check_api_key, origin_allowed, verify_token
from wsfleet.broker import BrokerUnavailable, NotReplicated
from wsfleet.connection import FleetConnection, RequestAnswer
from wsfleet.context import OVERLOADED_MESSAGE, ServerContext
from wsfleet.logs import log_event
from wsfleet.metrics import CONTENT_TYPE_LATEST
from wsfleet.protocol import ProtocolError, validate_publish_body

__all__ = ["make_request_handler"]

# PROTOCOL.md: a publish that WAIT could not confirm on --publish-replicas replicas.
NOT_REPLICATED_MESSAGE = "not confirmed on enough Redis replicas; it may still be delivered"

logger = logging.getLogger("wsfleet.http")

RequestHandler = Callable[[FleetConnection, Request], RequestAnswer]


def respond(
    connection: FleetConnection,
    status: http.HTTPStatus,
    body: dict[str, Any] | str | bytes,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a response with the protocol's ``reject`` and set our content type."""
    if isinstance(body, dict):
        text = codec.dumps(body).decode("utf-8") + "\n"
    elif isinstance(body, bytes):
        text = body.decode("utf-8")
    else:
        text = body
    response = connection.protocol.reject(status, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def make_request_handler(context: ServerContext) -> RequestHandler:
    """The ``process_request`` hook of one server instance."""
    settings = context.settings
    metrics = context.metrics
    retry_after = str(max(1, math.ceil(settings.drain_spread)))

    def refuse(
        connection: FleetConnection, reason: str, status: http.HTTPStatus, message: str
    ) -> Response:
        metrics.rejected_connections.labels(reason).inc()
        log_event(
            logger,
            logging.INFO,
            "handshake refused",
            event="refused",
            reason=reason,
            status=status.value,
        )
        headers = (
            {"Retry-After": retry_after} if status == http.HTTPStatus.SERVICE_UNAVAILABLE else None
        )
        return respond(connection, status, {"error": reason, "message": message}, headers=headers)

    def handshake(connection: FleetConnection, request: Request, query: str) -> Response | None:
        if context.draining:
            return refuse(connection, "draining", http.HTTPStatus.SERVICE_UNAVAILABLE, "draining")
        if settings.max_connections and context.open_connections >= settings.max_connections:
            return refuse(
                connection, "capacity", http.HTTPStatus.SERVICE_UNAVAILABLE, "at connection limit"
            )
        # (headers.get would raise and catch a KeyError for the usual request
        # without an Origin; a membership test does not.)
        headers = request.headers
        origin = headers["Origin"] if "Origin" in headers else None  # noqa: SIM401
        if not origin_allowed(origin, settings.allowed_origins):
            return refuse(connection, "origin", http.HTTPStatus.FORBIDDEN, "origin not allowed")
        if settings.jwt_secret:
            token = parse_qs(query).get("token", [None])[0]
            try:
                identity = verify_token(
                    token,
                    settings.jwt_secret,
                    audience=settings.jwt_audience,
                    issuer=settings.jwt_issuer,
                )
            except AuthError as exc:
                return refuse(connection, "auth", http.HTTPStatus.UNAUTHORIZED, str(exc))
            connection.identity = identity  # (its sender_json is encoded at its first publish)
        return None  # go on with the upgrade

    def health(connection: FleetConnection) -> Response:
        redis_up = context.broker.up
        if context.draining:
            status, state = http.HTTPStatus.SERVICE_UNAVAILABLE, "draining"
        elif not redis_up:
            status, state = http.HTTPStatus.SERVICE_UNAVAILABLE, "degraded"
        else:
            status, state = http.HTTPStatus.OK, "ok"
        return respond(
            connection,
            status,
            {
                "status": state,
                "instance": context.instance_id,
                "redis": "up" if redis_up else "down",
                "connections": context.open_connections,
                "rooms": len(context.hub.rooms),
            },
        )

    async def publish(connection: FleetConnection, request: Request) -> Response:
        if not settings.api_key:
            return respond(connection, http.HTTPStatus.NOT_FOUND, {"error": "not_found"})
        if request.method != "POST":
            return respond(
                connection,
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "method_not_allowed"},
                headers={"Allow": "POST"},
            )
        if not check_api_key(request.headers.get("Authorization"), settings.api_key):
            return respond(
                connection,
                http.HTTPStatus.UNAUTHORIZED,
                {"error": "unauthorized", "message": "Authorization: Bearer <api key> required"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        if connection.request_body_too_large:
            return respond(
                connection, http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too_large"}
            )
        try:
            command = validate_publish_body(connection.request_body or b"", context.limits)
        except ProtocolError as error:
            return respond(
                connection,
                http.HTTPStatus.BAD_REQUEST,
                {"error": error.code, "message": error.message},
            )
        if context.draining:
            return respond(
                connection,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "unavailable", "message": "draining"},
                headers={"Retry-After": retry_after},
            )
        metrics.inbound["message"].inc()
        if not context.publish_admitted():
            return respond(
                connection,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "unavailable", "message": OVERLOADED_MESSAGE},
                headers={"Retry-After": "1"},
            )
        context.publish_started()
        try:
            offset = await context.broker.publish(command.room, b'"api"', command.content_json)
        except BrokerUnavailable as exc:
            message = (
                NOT_REPLICATED_MESSAGE
                if isinstance(exc, NotReplicated)
                else "the message was not stored or delivered"
            )
            return respond(
                connection,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "unavailable", "message": message},
                headers={"Retry-After": "1"},
            )
        finally:
            context.publish_finished()
        return respond(connection, http.HTTPStatus.OK, {"offset": offset})

    def process_request(connection: FleetConnection, request: Request) -> RequestAnswer:
        if request.path == "/ws":  # the usual upgrade, without a query: nothing to split
            return handshake(connection, request, "")
        parts = urlsplit(request.path)
        path = parts.path
        if path == "/ws":
            return handshake(connection, request, parts.query)
        if path == "/api/publish":
            return publish(connection, request)
        if path not in ("/health", "/live", "/metrics"):
            return respond(connection, http.HTTPStatus.NOT_FOUND, {"error": "not_found"})
        if request.method not in ("GET", "HEAD"):
            return respond(
                connection,
                http.HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "method_not_allowed"},
                headers={"Allow": "GET"},
            )
        if path == "/health":
            return health(connection)
        if path == "/live":
            return respond(connection, http.HTTPStatus.OK, {"status": "alive"})
        return respond(
            connection, http.HTTPStatus.OK, metrics.render(), content_type=CONTENT_TYPE_LATEST
        )

    return process_request
