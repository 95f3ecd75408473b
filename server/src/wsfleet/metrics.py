"""Prometheus metrics with the exact names of PROTOCOL.md.

Each server instance owns a :class:`Metrics` with its own registry, so that tests
can run several in one process and ``/metrics`` shows only this server's series
(plus the standard process metrics such as resident memory).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from wsfleet.protocol import CLIENT_TYPES

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

OUTBOUND_TYPES = (
    "welcome",
    "joined",
    "left",
    "message",
    "ack",
    "pong",
    "error",
    "server-shutdown",
)

# Fanout on loopback takes tens of microseconds; across hosts, milliseconds.
# The close codes the server sends (PROTOCOL.md, "Close codes").
SERVER_CLOSE_CODES = (1000, 1001, 1007, 1009, 1011, 1012, 4001, 4008, 4029)

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """All metrics of one instance, with label children bound once for the hot path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.connected_clients = Gauge(
            "ws_connected_clients", "Open WebSocket connections", registry=self.registry
        )
        self.messages = Counter(
            "ws_messages_total",
            "WebSocket frames by direction and type",
            ["direction", "type"],
            registry=self.registry,
        )
        self.message_duration = Histogram(
            "ws_message_duration_seconds",
            "Time to handle one inbound frame",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fanout_latency = Histogram(
            "ws_fanout_latency_seconds",
            "Time from publish (Redis time) to local delivery",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.slow_consumer_disconnects = Counter(
            "ws_slow_consumer_disconnects",
            "Connections closed with 4008 because their outbound queue overflowed",
            registry=self.registry,
        )
        self.publishes_shed = Counter(
            "ws_publishes_shed",
            "Publishes refused with `unavailable` as overloaded: --publish-queue publishes "
            "were already waiting for Redis, or the event loop lagged past --shed-lag",
            registry=self.registry,
        )
        self.event_loop_lag = Gauge(
            "ws_event_loop_lag_seconds",
            "How late the event loop runs its timers (smoothed): above --shed-lag, "
            "publishes are refused as overloaded",
            registry=self.registry,
        )
        # Only codes the server itself chose (a client picks any code it likes for
        # its own closes, which would make the label set unbounded).
        self.server_closes = Counter(
            "ws_server_closes",
            "Connections the server closed, by the close code it sent",
            ["code"],
            registry=self.registry,
        )
        self.rejected_connections = Counter(
            "ws_rejected_connections",
            "Handshakes refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.redis_up = Gauge(
            "ws_redis_up", "1 when Redis answers and subscriptions are live", registry=self.registry
        )
        self.local_rooms = Gauge(
            "ws_local_rooms",
            "Rooms with at least one member on this instance",
            registry=self.registry,
        )
        self.draining = Gauge("ws_draining", "1 while the instance drains", registry=self.registry)

        self.inbound = {kind: self.messages.labels("inbound", kind) for kind in CLIENT_TYPES}
        self.inbound_invalid = self.messages.labels("inbound", "invalid")
        self.outbound = {kind: self.messages.labels("outbound", kind) for kind in OUTBOUND_TYPES}
        for reason in ("auth", "origin", "capacity", "draining"):
            self.rejected_connections.labels(reason)
        # Every code an alert or a dashboard panel asks for exists from the start
        # (a rate over a series that does not exist yet is no data, not zero).
        for code in SERVER_CLOSE_CODES:
            self.server_closes.labels(str(code))

    def render(self) -> bytes:
        """The text exposition format served at ``/metrics``."""
        return generate_latest(self.registry)
