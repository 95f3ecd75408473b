"""Assemble and run one server instance: Redis broker, hub, WebSocket server, drain."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, cast

from websockets.asyncio.server import ServerConnection, serve

from wsfleet.broker import RedisBroker
from wsfleet.config import Settings
from wsfleet.connection import ConnectionPolicy, FleetConnection
from wsfleet.context import ServerContext
from wsfleet.drain import Drainer
from wsfleet.http import make_request_handler
from wsfleet.hub import Hub
from wsfleet.keepalive import Keepalive
from wsfleet.logs import log_event
from wsfleet.metrics import Metrics
from wsfleet.protocol import Limits
from wsfleet.session import serve_connection

__all__ = ["run_server"]

logger = logging.getLogger("wsfleet.server")

# Small transport buffers: frames beyond this wait in the connection's backlog,
# where they are references to shared bytes rather than per-connection copies.
WRITE_LIMIT = 16 * 1024
# Inbound frames buffered per connection before reading pauses.
MAX_QUEUE = 8
# Bound on the closing handshake (and on a peer that stopped reading).
CLOSE_TIMEOUT = 5.0


def connection_class(policy: ConnectionPolicy) -> type[FleetConnection]:
    """A :class:`FleetConnection` subclass bound to this server's policy."""

    class BoundConnection(FleetConnection):
        pass

    BoundConnection.policy = policy
    # The options every connection of this server has (see FleetConnection.__init__).
    BoundConnection.ping_interval = None
    BoundConnection.ping_timeout = None
    BoundConnection.close_timeout = CLOSE_TIMEOUT
    BoundConnection.max_queue_high = MAX_QUEUE
    BoundConnection.write_limit_high = WRITE_LIMIT
    return BoundConnection


async def run_server(settings: Settings) -> int:
    """Serve until a signal drains the instance; returns the exit status."""
    metrics = Metrics()
    hub = Hub(metrics)
    broker = RedisBroker(
        settings.redis_url,
        password=settings.redis_password,
        history_size=settings.history_size,
        history_ttl=settings.history_ttl,
        delivery=hub,
        on_state_change=lambda up: metrics.redis_up.set(1 if up else 0),
    )
    hub.attach(broker)
    context = ServerContext(
        settings=settings,
        metrics=metrics,
        hub=hub,
        broker=broker,
        limits=Limits(max_content_size=settings.max_content_size),
    )

    def on_slow_consumer(connection: FleetConnection) -> None:
        metrics.slow_consumer_disconnects.inc()
        log_event(
            logger,
            logging.WARNING,
            "slow consumer: outbound queue overflowed",
            event="slow_consumer",
            conn=connection.conn_id,
        )

    policy = ConnectionPolicy(
        queue_bytes=settings.queue_bytes,
        queue_messages=settings.queue_messages,
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        close_timeout=CLOSE_TIMEOUT,
        max_request_body=settings.max_content_size + 4096,
        on_slow_consumer=on_slow_consumer,
    )

    def handler(connection: ServerConnection) -> Coroutine[Any, Any, None]:
        # The coroutine of serve_connection itself: no wrapper frame per connection.
        return serve_connection(context, cast(FleetConnection, connection))

    await broker.start()
    server = await serve(
        handler,
        settings.host,
        settings.port,
        process_request=make_request_handler(context),
        compression="deflate" if settings.compression else None,
        max_size=settings.max_frame_size,
        max_queue=MAX_QUEUE,
        write_limit=WRITE_LIMIT,
        # Pings come from one Keepalive task for the whole server, not one per connection.
        ping_interval=None,
        ping_timeout=None,
        close_timeout=CLOSE_TIMEOUT,
        create_connection=connection_class(policy),
        server_header=None,
        backlog=4096,
    )
    log_event(
        logger,
        logging.INFO,
        "listening",
        event="start",
        instance=settings.instance_id,
        settings=settings.redacted(),
    )
    keepalive = Keepalive(
        lambda: server.all_connections, settings.ping_interval, settings.ping_timeout
    )
    keepalive.start()
    drainer = Drainer(context, server)
    drainer.install_signal_handlers()
    await drainer.finished.wait()
    await keepalive.stop()
    return 0
