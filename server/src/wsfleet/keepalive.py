"""Server WebSocket pings: one task per server instead of one per connection.

PROTOCOL.md: the server pings every connection every ``ping_interval`` seconds and
closes those that do not answer within ``ping_timeout``. websockets would run a
keepalive task per connection (a task, its coroutine frame, a sleep future and a
timer handle: ~1.5 KB per idle connection); here one task walks the server's open
connections every interval, writes a ping to each one that has no unanswered ping,
and schedules one timer per round that closes (1011, like websockets) the
connections of that round still unanswered after ``ping_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection

from wsfleet.connection import FleetConnection

__all__ = ["Keepalive"]

logger = logging.getLogger("wsfleet.keepalive")

# Connections pinged between two yields to the event loop, so that a round over
# tens of thousands of connections does not hold up other work for long.
BATCH = 500


class Keepalive:
    """Pings ``connections()`` every ``interval`` s; closes the silent after ``timeout`` s."""

    def __init__(
        self,
        connections: Callable[[], Collection[FleetConnection]],
        interval: float,
        timeout: float,
    ) -> None:
        self.connections = connections
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keepalive")

    async def stop(self) -> None:
        task, self._task = self._task, None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.ping_round(loop)
            except Exception:  # never let one bad round stop the pings
                logger.exception("keepalive round failed")

    async def ping_round(self, loop: asyncio.AbstractEventLoop) -> int:
        """Ping every connection without an unanswered ping; returns how many."""
        sent_at = loop.time()
        pinged: list[FleetConnection] = []
        for count, connection in enumerate(list(self.connections()), 1):
            if connection.keepalive_ping(sent_at):
                pinged.append(connection)
            if count % BATCH == 0:
                await asyncio.sleep(0)
        if pinged:
            timer: asyncio.TimerHandle | None = None

            def expire() -> None:
                assert timer is not None
                self._timers.discard(timer)
                for connection in pinged:
                    connection.keepalive_expired(sent_at)

            timer = loop.call_later(self.timeout, expire)
            self._timers.add(timer)
        return len(pinged)
