"""Batch concurrent calls into few round trips.

The publish path sends one Redis script call per message. Sent one by one, each
call takes a pooled connection and a ``write`` of its own on the server, and a
wake-up, a ``read`` and a ``write`` of its own in Redis. :class:`Batcher` puts the
calls that arrive while earlier ones are on their way into one batch, which the
caller's ``send_batch`` sends as one pipeline: at low rates a call still goes out
at once (an idle lane takes it on the next loop iteration), under load the
batches grow by themselves and the cost per call falls.

A few lanes (tasks) send batches, so that one batch waiting for its round trip
does not hold up the next. Calls wait in one FIFO queue; the caller bounds how
many calls it submits (the server refuses publishes past ``--publish-queue``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

Call = TypeVar("Call")

# What ``send_batch`` returns for each call of a batch: its result, or the
# exception that this call (alone) gets.
Outcome = object


class Batcher(Generic[Call]):
    """Send calls in batches over ``lanes`` concurrent senders."""

    def __init__(
        self,
        send_batch: Callable[[list[Call]], Awaitable[list[Outcome]]],
        *,
        lanes: int = 2,
        max_batch: int = 256,
    ) -> None:
        if lanes < 1 or max_batch < 1:
            raise ValueError("lanes and max_batch must be positive")
        self._send_batch = send_batch
        self._lanes = lanes
        self._max_batch = max_batch
        self._waiting: collections.deque[tuple[Call, asyncio.Future[object]]] = collections.deque()
        # Futures of idle lanes; completing one wakes that lane.
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def waiting(self) -> int:
        """Calls queued and not yet handed to a lane."""
        return len(self._waiting)

    def submit(self, call: Call) -> asyncio.Future[object]:
        """Queue one call; the future gets its outcome."""
        if self._closed:
            raise RuntimeError("batcher closed")
        loop = asyncio.get_running_loop()
        if not self._tasks:
            self._tasks = [
                loop.create_task(self._run_lane(), name=f"batch-lane-{lane}")
                for lane in range(self._lanes)
            ]
        future: asyncio.Future[object] = loop.create_future()
        self._waiting.append((call, future))
        if len(self._waiting) == 1:
            self._wake_one()
        return future

    async def close(self) -> None:
        """Stop the lanes; calls still waiting fail with ``RuntimeError``."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RuntimeError("batcher closed"))
                future.exception()  # the caller may have given up on it

    def _wake_one(self) -> None:
        while self._idle:
            idle = self._idle.popleft()
            if not idle.done():
                idle.set_result(None)
                return

    async def _run_lane(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                idle: asyncio.Future[None] = loop.create_future()
                self._idle.append(idle)
                await idle
                continue
            count = min(len(self._waiting), self._max_batch)
            batch = [self._waiting.popleft() for _ in range(count)]
            if self._waiting:
                self._wake_one()  # more than one batch's worth: another lane helps
            await self._send(batch)

    async def _send(self, batch: list[tuple[Call, asyncio.Future[object]]]) -> None:
        try:
            outcomes = await self._send_batch([call for call, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole batch failed alike
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
