"""One load-generating process of ``wsfleet bench``.

Started by the coordinator (:mod:`wsfleet.bench.runner`) as
``python -m wsfleet.bench.worker``. It reads its task as one JSON line on stdin,
then commands, one JSON line each; it answers with JSON lines (events) on
stdout. It exits when told to finish or when stdin closes (the coordinator
went away), dropping its connections, so nothing outlives a bench run.

Commands: ``connect`` (open the connections; fanout subscribers also join),
``check`` (ping every connection), ``publish`` (fanout: publish at a rate for a
duration), ``finish`` (report the result, drop the connections, exit).
Events: ``hello``, ``progress``, ``ready``, ``checked``, ``published``,
``result``, ``fatal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wsfleet import codec
from wsfleet.bench.stats import LatencyHistogram
from wsfleet.bench.wire import DIALECTS, Dialect, Endpoint, HandshakeError, WireConnection
from wsfleet.bench.wire import open_connection as open_wire

__all__ = ["Worker", "main"]

PROGRESS_EVERY = 0.25


def emit(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(codec.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


def failure_reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, HandshakeError):
        return str(error)
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError):
        return "reset"
    if isinstance(error, OSError):
        return f"os error {error.errno}" if error.errno else type(error).__name__
    return type(error).__name__


@dataclass(slots=True)
class Subscriber:
    """What a fanout subscriber keeps: its room and, per publisher, what it saw."""

    room: str
    joined: asyncio.Future[None] | None = None
    # publisher id -> [next expected sequence number, set of later ones seen early]
    seen: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Publisher:
    """A fanout publisher: its rooms, in turn, and a sequence number per room."""

    ident: str
    rooms: list[str]
    cursor: Iterator[str]
    sequence: Counter[str] = field(default_factory=Counter)
    connection: WireConnection | None = None


class Worker:
    """The task of one process; see the module docstring."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.index: int = task.get("worker", 0)
        self.dialect: Dialect = DIALECTS[task.get("dialect", "wsfleet")]
        self.targets = [Endpoint.parse(url, self.dialect) for url in task["targets"]]
        self.sources: list[str] = task.get("sources") or []
        self.timeout: float = task.get("timeout", 30.0)
        self.concurrency: int = max(1, task.get("concurrency", 100))
        self.connect_rate: float = task.get("connect_rate", 0.0)
        self.connections: list[WireConnection] = []
        self.handshakes = LatencyHistogram()
        self.latency = LatencyHistogram()
        self.failures: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.attempted = 0
        self.opened = 0
        self.server_closed = 0
        self.close_codes: Counter[str] = Counter()
        self.pongs = 0
        self.finishing = False
        # fanout
        self.received = 0
        self.unique = 0
        self.duplicates = 0
        self.sent = 0
        self.acked: Counter[str] = Counter()
        self.acked_total = 0
        # Publish to ack: what a publisher waits (with --publish-replicas, WAIT included).
        self.ack_latency = LatencyHistogram()
        self.unanswered: dict[str, float] = {}  # request id -> when it was sent
        self.subscribers: list[WireConnection] = []
        self.publishers: list[Publisher] = []
        self.phase = "idle"

    # Events from connections

    def on_event(self, connection: WireConnection, kind: str, data: Any) -> None:
        """Idle connections and publishers."""
        if kind == "ack":
            room = data.get("room")
            self.acked[room] += 1
            self.acked_total += 1
            sent = self.unanswered.pop(data.get("id"), None)
            if sent is not None:
                self.ack_latency.record(time.perf_counter() - sent)
        elif kind == "welcome":
            connection.welcomed()
        elif kind == "pong":
            self.pongs += 1
        elif kind == "error":
            self.errors[str(data.get("code"))] += 1
            self.unanswered.pop(data.get("id"), None)
        elif kind == "_close":
            self._closed(data)

    def on_subscriber_event(self, connection: WireConnection, kind: str, data: Any) -> None:
        """Fanout members. Hot path: one call per delivered message."""
        if kind == "message":
            now = time.time()
            self.received += 1
            content = data["content"]
            self.latency.record(now - content["t"])
            seen = connection.state.seen
            publisher = content["p"]
            number = content["s"]
            entry = seen.get(publisher)
            if entry is None:
                entry = seen[publisher] = [0, None]
            expected = entry[0]
            if number == expected:
                expected += 1
                early = entry[1]
                if early:
                    while expected in early:
                        early.discard(expected)
                        expected += 1
                entry[0] = expected
                self.unique += 1
            elif number > expected:
                early = entry[1]
                if early is None:
                    early = entry[1] = set()
                if number in early:
                    self.duplicates += 1
                else:
                    early.add(number)
                    self.unique += 1
            else:
                self.duplicates += 1
        elif kind == "joined":
            joined = connection.state.joined
            if joined is not None and not joined.done():
                joined.set_result(None)
        elif kind == "welcome":
            connection.welcomed()
        elif kind == "error":
            self.errors[str(data.get("code"))] += 1
        elif kind == "_close":
            self._closed(data)
            joined = connection.state.joined
            if joined is not None and not joined.done():
                joined.set_exception(ConnectionError("closed before joined"))
                joined.exception()

    def _closed(self, code: int | None) -> None:
        if not self.finishing:
            self.server_closed += 1
            self.close_codes[str(code)] += 1

    # Connecting

    def _placement(self, index: int) -> tuple[Endpoint, str | None]:
        """Target and source address of the connection with global number ``index``."""
        count = len(self.targets)
        target = self.targets[index % count]
        source = None
        if self.sources:
            source = self.sources[(index // count) % len(self.sources)]
        return target, source

    async def _open(
        self, index: int, handler: Any, limit: asyncio.Semaphore
    ) -> WireConnection | None:
        target, source = self._placement(index)
        self.attempted += 1
        try:
            connection, seconds = await open_wire(
                target, self.dialect, handler, source=source, timeout=self.timeout
            )
        except Exception as error:
            self.failures[failure_reason(error)] += 1
            return None
        finally:
            limit.release()
        self.handshakes.record(seconds)
        self.opened += 1
        return connection

    async def _open_many(self, indexes: list[int], handler: Any) -> list[WireConnection | None]:
        limit = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        started = loop.time()
        tasks = []
        for number, index in enumerate(indexes):
            if self.connect_rate > 0:
                delay = started + number / self.connect_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await limit.acquire()  # at most `concurrency` handshakes in flight
            tasks.append(asyncio.ensure_future(self._open(index, handler, limit)))
            await asyncio.sleep(0)
        return list(await asyncio.gather(*tasks))

    async def connect(self) -> None:
        self.phase = "connect"
        scenario = self.task["scenario"]
        if scenario in ("connect", "idle"):
            first = self.task["first"]
            indexes = list(range(first, first + self.task["count"]))
            opened = await self._open_many(indexes, self.on_event)
            self.connections = [c for c in opened if c is not None]
        else:
            await self._connect_fanout()
        gc.collect()
        gc.freeze()  # what exists now lives to the end: keep the collector off it
        self.phase = "connected"
        emit({"ev": "ready", "members_by_room": self.members_by_room(), **self.counters()})

    async def _connect_fanout(self) -> None:
        members: list[tuple[int, str]] = [(i, room) for i, room in self.task["subscribers"]]
        opened = await self._open_many([i for i, _ in members], self.on_subscriber_event)
        joins = []
        for connection, (_, room) in zip(opened, members, strict=True):
            if connection is None:
                continue
            state = Subscriber(room, asyncio.get_running_loop().create_future())
            connection.state = state
            self.subscribers.append(connection)
            connection.send_text(self.dialect.join(room))
            assert state.joined is not None
            joins.append(state.joined)
        if joins:
            done, pending = await asyncio.wait(joins, timeout=self.timeout)
            for future in pending:
                future.cancel()
            for future in done:
                if future.exception() is not None:
                    self.failures["join failed"] += 1
            if pending:
                self.failures["join timeout"] += len(pending)
        joined = []
        for connection in self.subscribers:
            future = connection.state.joined
            if future.done() and not future.cancelled() and future.exception() is None:
                joined.append(connection)
            else:
                connection.abort()  # not a member: it would only count as losses
            connection.state.joined = None
        self.subscribers = joined
        specs = self.task["publishers"]
        opened = await self._open_many([spec["target"] for spec in specs], self.on_event)
        for spec, connection in zip(specs, opened, strict=True):
            if connection is None:
                continue
            publisher = Publisher(spec["id"], spec["rooms"], itertools.cycle(spec["rooms"]))
            publisher.connection = connection
            self.publishers.append(publisher)
        self.connections = self.subscribers + [
            p.connection for p in self.publishers if p.connection is not None
        ]

    # Idle check

    async def check(self, timeout: float) -> None:
        """Ping every open connection; report how many are open and answered."""
        self.phase = "check"
        self.pongs = 0
        alive = [c for c in self.connections if not c.closed and c.transport is not None]
        for number, connection in enumerate(alive):
            connection.send_text(self.dialect.ping(str(number)))
            if number % 500 == 499:
                await asyncio.sleep(0)
        deadline = time.monotonic() + timeout
        while self.pongs < len(alive) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.phase = "checked"
        emit({"ev": "checked", "alive": len(alive), "answered": self.pongs, **self.counters()})

    # Publishing

    async def publish(self, rate: float, duration: float, payload: int, settle: float) -> None:
        self.phase = "publish"
        publishers = [p for p in self.publishers if p.connection is not None]
        loop = asyncio.get_running_loop()
        pad = "x" * max(0, payload - 60)
        started = loop.time()
        turn = itertools.cycle(publishers) if publishers else None
        dialect = self.dialect
        while turn is not None:
            elapsed = loop.time() - started
            if elapsed >= duration:
                break
            due = int(elapsed * rate) + 1 - self.sent
            for _ in range(max(0, due)):
                publisher = next(turn)
                room = next(publisher.cursor)
                number = publisher.sequence[room]
                publisher.sequence[room] = number + 1
                content = (
                    f'{{"t":{time.time()!r},"p":"{publisher.ident}","s":{number},"x":"{pad}"}}'
                ).encode()
                assert publisher.connection is not None
                request_id = f"{publisher.ident}.{self.sent}"
                self.unanswered[request_id] = time.perf_counter()
                publisher.connection.send_text(dialect.publish(room, content, request_id))
                self.sent += 1
            await asyncio.sleep(0.002)
        # Wait for the acks (or errors) of what was sent.
        deadline = loop.time() + settle
        while self.acked_total + sum(self.errors.values()) < self.sent:
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        self.phase = "published"
        emit(
            {
                "ev": "published",
                "sent": self.sent,
                "acked": dict(self.acked),
                "errors": dict(self.errors),
                **self.counters(),
            }
        )

    # Reporting

    def counters(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "opened": self.opened,
            "failed": sum(self.failures.values()),
            "server_closed": self.server_closed,
            "received": self.received,
            "unique": self.unique,
            "sent": self.sent,
            "acked_total": self.acked_total,
            "phase": self.phase,
        }

    def members_by_room(self) -> dict[str, int]:
        members: Counter[str] = Counter()
        for connection in self.subscribers:
            members[connection.state.room] += 1
        return dict(members)

    def result(self) -> dict[str, Any]:
        unique_by_room: Counter[str] = Counter()
        for connection in self.subscribers:
            state: Subscriber = connection.state
            unique_by_room[state.room] += sum(
                entry[0] + (len(entry[1]) if entry[1] else 0) for entry in state.seen.values()
            )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "ev": "result",
            **self.counters(),
            "failures": dict(self.failures),
            "errors": dict(self.errors),
            "close_codes": dict(self.close_codes),
            "duplicates": self.duplicates,
            "handshake": self.handshakes.to_json(),
            "latency": self.latency.to_json(),
            "ack_latency": self.ack_latency.to_json(),
            "unique_by_room": dict(unique_by_room),
            "members_by_room": self.members_by_room(),
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss": usage.ru_maxrss * 1024,
        }

    def drop_all(self) -> None:
        self.finishing = True
        for connection in self.connections:
            connection.abort()


async def _progress(worker: Worker) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        emit({"ev": "progress", **worker.counters()})


async def run(stdin: asyncio.StreamReader) -> int:
    line = await stdin.readline()
    if not line:
        return 0
    worker = Worker(codec.loads(line))
    emit({"ev": "hello", "worker": worker.index})
    progress = asyncio.create_task(_progress(worker))
    running: asyncio.Task[None] | None = None
    try:
        while True:
            line = await stdin.readline()
            if not line:
                return 0  # the coordinator went away
            command = codec.loads(line)
            name = command.get("cmd")
            if running is not None and not running.done():
                emit({"ev": "fatal", "error": f"{name} while another command runs"})
                return 1
            if name == "connect":
                running = asyncio.create_task(worker.connect())
            elif name == "check":
                running = asyncio.create_task(worker.check(command.get("timeout", 30.0)))
            elif name == "publish":
                running = asyncio.create_task(
                    worker.publish(
                        command["rate"],
                        command["duration"],
                        command.get("payload", 100),
                        command.get("settle", 10.0),
                    )
                )
            elif name == "finish":
                worker.finishing = True
                emit(worker.result())
                return 0
            if running is not None:
                running.add_done_callback(_report_crash)
    finally:
        progress.cancel()
        if running is not None:
            running.cancel()
        worker.drop_all()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0.05)  # let the transports send their RSTs


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        emit({"ev": "fatal", "error": repr(task.exception())})


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return await run(reader)


def main() -> int:
    from wsfleet.bench.runner import run_async

    return run_async(_main())


if __name__ == "__main__":
    sys.exit(main())
