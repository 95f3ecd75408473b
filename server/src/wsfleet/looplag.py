"""How late the event loop runs its callbacks: the overload signal of one instance.

An asyncio server that has more work than CPU does not fail; it gets later and
later: every callback waits behind the others, and frames wait unread in the
kernel's socket buffers, where no queue limit of the server sees them. The loop's
lag measures exactly that. :class:`LoopLag` schedules a timer every ``interval``
and records how late it fired, smoothed so that one long callback does not count
as an overload but a sustained backlog does. The server exports it
(``ws_event_loop_lag_seconds``) and, with ``--shed-lag``, refuses publishes while
it is above that bound (see :meth:`wsfleet.context.ServerContext.publish_admitted`).
"""

from __future__ import annotations

import asyncio

__all__ = ["LoopLag"]


class LoopLag:
    """Smoothed lag of one event loop, in seconds (an exponential moving average)."""

    def __init__(self, interval: float = 0.05, smoothing: float = 0.25) -> None:
        if interval <= 0 or not 0 < smoothing <= 1:
            raise ValueError("interval must be positive and smoothing in (0, 1]")
        self.interval = interval
        self.smoothing = smoothing
        self.seconds = 0.0
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.interval
        self._timer = loop.call_at(self._due, self._tick, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        lag = max(0.0, now - self._due)
        self.seconds += self.smoothing * (lag - self.seconds)
        self._due = now + self.interval
        self._timer = loop.call_at(self._due, self._tick, loop)
