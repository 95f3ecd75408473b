"""Assemble and run one server instance: Redis broker, hub, WebSocket server, drain."""

from __future__ import annotations

import asyncio
import logging

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from wsfleet.broker import Broker, RedisBroker
from wsfleet.cluster_broker import ClusterBroker
from wsfleet.config import Settings
from wsfleet.connection import ConnectionPolicy, ConnectionRegistry, FleetConnection
from wsfleet.context import ServerContext
from wsfleet.drain import Drainer
from wsfleet.http import make_request_handler
from wsfleet.hub import Hub
from wsfleet.keepalive import Keepalive
from wsfleet.logs import log_event
from wsfleet.metrics import Metrics
from wsfleet.protocol import Limits
from wsfleet.session import Session

__all__ = ["run_server"]

logger = logging.getLogger("wsfleet.server")

# Small transport buffers: frames beyond this wait in the connection's backlog,
# where they are references to shared bytes rather than per-connection copies.
WRITE_LIMIT = 16 * 1024
# Inbound messages waiting per connection (while one awaits Redis) before reading pauses.
MAX_INBOX = 8
# Bound on the closing handshake (and on a peer that stopped reading).
CLOSE_TIMEOUT = 5.0
# Bound on the opening handshake.
OPEN_TIMEOUT = 10.0
# permessage-deflate (--compression) with the settings of websockets' own servers:
# small windows, so each compressed connection costs less memory.
DEFLATE = ServerPerMessageDeflateFactory(
    server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
)


async def run_server(settings: Settings) -> int:
    """Serve until a signal drains the instance; returns the exit status."""
    metrics = Metrics()
    hub = Hub(metrics)
    broker: Broker
    if settings.redis_cluster:
        broker = ClusterBroker(
            settings.redis_cluster,
            username=settings.redis_username,
            password=settings.redis_password,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            delivery=hub,
            publish_replicas=settings.publish_replicas,
            publish_replicas_timeout=settings.publish_replicas_timeout,
            on_state_change=lambda up: metrics.redis_up.set(1 if up else 0),
        )
    else:
        broker = RedisBroker(
            settings.redis_url,
            password=settings.redis_password,
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            delivery=hub,
            publish_replicas=settings.publish_replicas,
            publish_replicas_timeout=settings.publish_replicas_timeout,
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
        open_timeout=OPEN_TIMEOUT,
        max_request_body=settings.max_content_size + 4096,
        max_size=settings.max_frame_size,
        write_limit=WRITE_LIMIT,
        max_inbox=MAX_INBOX,
        extensions=[DEFLATE] if settings.compression else None,
        on_slow_consumer=on_slow_consumer,
    )
    registry = ConnectionRegistry(policy, Session(context, make_request_handler(context)))

    metrics.event_loop_lag.set_function(lambda: context.loop_lag.seconds)
    context.loop_lag.start()
    await broker.start()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: FleetConnection(registry), settings.host, settings.port, backlog=4096
    )
    log_event(
        logger,
        logging.INFO,
        "listening",
        event="start",
        instance=settings.instance_id,
        settings=settings.redacted(),
    )
    # Pings come from one Keepalive task for the whole server, not one per connection.
    keepalive = Keepalive(
        lambda: registry.connections, settings.ping_interval, settings.ping_timeout
    )
    keepalive.start()
    drainer = Drainer(context, registry, listener)
    drainer.install_signal_handlers()
    await drainer.finished.wait()
    await keepalive.stop()
    context.loop_lag.stop()
    return 0
