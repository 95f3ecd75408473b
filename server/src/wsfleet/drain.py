"""Graceful shutdown on SIGTERM or SIGINT; a second signal exits at once.

The drain, in order, all within ``--drain-timeout``:

1. ``/health`` answers 503 ``draining`` and new handshakes get 503 with
   ``Retry-After``; new publishes are answered ``unavailable``.
2. Publishes already sent to Redis finish, so every ack that will ever be sent is.
3. A barrier on the Redis subscriber connection: every message published before
   it (so every acked message) has reached the local outbound queues.
4. Every client gets ``server-shutdown`` with ``reconnectAfter`` drawn at random
   over ``--drain-spread``, its queue is flushed, and it is closed with 1012.
5. Redis connections are closed and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time

from wsfleet.connection import CloseCode, ConnectionRegistry, FleetConnection
from wsfleet.context import ServerContext
from wsfleet.logs import log_event
from wsfleet.protocol import encode

__all__ = ["Drainer"]

logger = logging.getLogger("wsfleet.drain")

# Exit status for a second signal during the drain: like a shell's 128 + SIGINT.
EXIT_INTERRUPTED = 130


class Drainer:
    """Owns the shutdown sequence of one server; :attr:`finished` resolves at the end."""

    def __init__(
        self, context: ServerContext, registry: ConnectionRegistry, listener: asyncio.Server
    ) -> None:
        self.context = context
        self.registry = registry
        self.listener = listener
        self.finished: asyncio.Event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self._task is not None:
            log_event(logger, logging.WARNING, "second signal: exiting now", signal=signum)
            logging.shutdown()
            os._exit(EXIT_INTERRUPTED)
        log_event(
            logger, logging.INFO, "draining", event="drain", signal=signal.Signals(signum).name
        )
        self.start()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        context = self.context
        settings = context.settings
        started = time.monotonic()
        context.draining = True
        context.metrics.draining.set(1)
        try:
            async with asyncio.timeout(settings.drain_timeout * 0.9):
                await self._drain_steps()
        except TimeoutError:
            log_event(
                logger, logging.WARNING, "drain timed out; aborting the rest", event="drain_timeout"
            )
            for connection in list(self.registry.connections):
                connection.abort()
        try:
            async with asyncio.timeout(max(0.5, settings.drain_timeout * 0.1)):
                self.listener.close()
                remaining = list(self.registry.connections)
                for connection in remaining:
                    connection.close(CloseCode.SERVICE_RESTART, "server restart")
                await asyncio.gather(*(connection.wait_lost() for connection in remaining))
                await context.broker.close()
        except TimeoutError:
            log_event(logger, logging.WARNING, "closing timed out", event="drain_timeout")
        log_event(
            logger,
            logging.INFO,
            "drained",
            event="drained",
            seconds=round(time.monotonic() - started, 3),
        )
        self.finished.set()

    async def _drain_steps(self) -> None:
        context = self.context
        settings = context.settings
        if context.publishes_in_flight:
            await context.publishes_settled.wait()
        if not await context.broker.barrier(timeout=max(1.0, settings.drain_timeout / 4)):
            log_event(logger, logging.WARNING, "no redis barrier; closing anyway", event="drain")
        connections = [c for c in self.registry.connections if c.is_open]
        spread_ms = settings.drain_spread * 1000
        await asyncio.gather(
            *(self._close(connection, random.uniform(0, spread_ms)) for connection in connections)
        )

    async def _close(self, connection: FleetConnection, reconnect_after_ms: float) -> None:
        connection.send_frame(
            encode({"type": "server-shutdown", "reconnectAfter": round(reconnect_after_ms)})
        )
        self.context.metrics.outbound["server-shutdown"].inc()
        await connection.wait_flushed()
        await connection.close_with(CloseCode.SERVICE_RESTART, "server restart")
