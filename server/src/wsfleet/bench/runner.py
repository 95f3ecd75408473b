"""The scenarios of ``wsfleet bench``, run across worker processes.

The coordinator (this module) splits the work over workers
(:mod:`wsfleet.bench.worker`, one process each, at most
:data:`MAX_PER_WORKER` connections each since a process may hold ~20,000 file
descriptors here), moves them through the phases together, samples the servers'
memory and CPU from /proc between phases and merges what the workers measured.

- ``connect``: ramp to N connections; connects per second, handshake latency
  (TCP connect to ``welcome``), failures, server RSS before and after.
- ``idle``: the same, then hold them, ping every one and count the answers:
  what K server processes hold and at what memory per connection.
- ``fanout``: R rooms x C members spread over the instances, P publishers at a
  total rate for a duration; deliveries per second, end-to-end latency from the
  publisher's clock to the member's, lost and duplicated messages, CPU of the
  servers and of Redis.
- ``churn``: the same with members leaving and resuming continuously
  (:mod:`wsfleet.bench.churn`): duplicates, gaps, lost messages, resume latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from wsfleet import codec
from wsfleet.bench import procstat
from wsfleet.bench.stats import LatencyHistogram, summarize

__all__ = [
    "MAX_PER_WORKER",
    "BenchError",
    "BenchOptions",
    "ProgressSink",
    "run_async",
    "run_scenario",
]

T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (as the server does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


MAX_PER_WORKER = 18_000
# Loopback's ephemeral range is 32768-60999; stay well inside it per (source, target).
PORTS_PER_SOURCE = 25_000


class BenchError(Exception):
    """The bench could not run (a worker died, a phase timed out...)."""


ProgressSink = Callable[[str, float, float, str], None]  # (phase, done, total, info)


def _no_progress(phase: str, done: float, total: float, info: str) -> None:
    pass


@dataclass(slots=True)
class RedisNode:
    """One redis-server a run measures: its CPU time and, given its port, its commands."""

    name: str
    pid: int
    role: str = "single"  # single, primary or replica
    port: int | None = None  # loopback port, for INFO's total_commands_processed


@dataclass(slots=True)
class BenchOptions:
    """Everything one scenario run needs; see ``wsfleet bench --help``."""

    scenario: str
    urls: list[str]
    dialect: str = "wsfleet"
    label: str | None = None
    processes: int = 0  # 0: as few as the connection count allows
    sources: list[str] | None = None  # None: automatic for loopback targets
    concurrency: int = 200  # handshakes in flight per worker
    connect_rate: float = 0.0  # connects per second in all (0: as fast as possible)
    timeout: float = 30.0  # one handshake or join
    phase_timeout: float = 600.0  # a whole phase
    server_pids: list[int] = field(default_factory=list)
    # Processes on the path between the client and the servers (a load balancer's
    # nginx): their CPU is measured over the same window as the servers'.
    proxy_pids: list[int] = field(default_factory=list)
    redis_pid: int | None = None
    redis_url: str | None = None
    # Every node of the backbone, when the caller knows them (a cluster); otherwise
    # the one Redis of redis_pid / redis_url.
    redis_nodes: list[RedisNode] = field(default_factory=list)
    # connect / idle
    connections: int = 1000
    hold: float = 0.0
    check: bool = False
    settle: float = 2.0  # seconds before the "after" memory reading
    # fanout
    rooms: int = 10
    clients_per_room: int = 10
    publishers: int = 2
    rate: float = 100.0  # messages per second, all publishers together
    duration: float = 10.0
    payload: int = 100  # bytes of content per message
    drain_timeout: float = 5.0  # no progress this long after publishing ends: stop
    # churn
    churners: int = 2  # members per room that keep leaving and resuming
    seed: int = 11

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Workers


class WorkerHandle:
    """One worker process and the events it sent."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.counters: dict[str, Any] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                await self.events.put({"ev": "exit"})
                return
            try:
                event = codec.loads(line)
            except ValueError:
                continue
            if "phase" in event:
                self.counters = event
            if event.get("ev") != "progress":
                await self.events.put(event)

    async def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(codec.dumps(command) + b"\n")
        await self.process.stdin.drain()

    async def expect(self, name: str, timeout: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                event = await self.events.get()
        except TimeoutError:
            raise BenchError(f"worker {self.index}: no {name!r} within {timeout:.0f}s") from None
        if event.get("ev") == name:
            return event
        if event.get("ev") == "exit":
            raise BenchError(f"worker {self.index} exited (status {await self.process.wait()})")
        raise BenchError(f"worker {self.index}: expected {name!r}, got {event}")

    async def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        self.reader.cancel()


async def start_workers(tasks: Sequence[dict[str, Any]]) -> list[WorkerHandle]:
    workers = []
    try:
        for index, task in enumerate(tasks):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wsfleet.bench.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            worker = WorkerHandle(index, process)
            workers.append(worker)
            await worker.send({**task, "worker": index})
        await asyncio.gather(*(w.expect("hello", 60) for w in workers))
    except BaseException:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        raise
    return workers


async def all_expect(
    workers: Sequence[WorkerHandle],
    name: str,
    timeout: float,
    progress: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Wait for ``name`` from every worker, calling ``progress`` meanwhile."""
    waiting = asyncio.gather(*(w.expect(name, timeout) for w in workers))
    try:
        while True:
            done, _ = await asyncio.wait([waiting], timeout=0.25)
            if progress is not None:
                progress()
            if done:
                return waiting.result()
    except BaseException:
        waiting.cancel()
        with contextlib.suppress(BaseException):
            await waiting
        raise


def total(workers: Sequence[WorkerHandle], key: str) -> int:
    return sum(int(w.counters.get(key, 0)) for w in workers)


# Placement


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.")


def plan_sources(options: BenchOptions, workers: int) -> list[str]:
    """Source addresses: one per worker on loopback (127.0.0.2, ...), unless given.

    A target off loopback (a load balancer's address) gets no automatic source:
    the kernel picks the address of the route to it. A 127.0.0.x source cannot
    reach such a target (connect() fails for every connection), so given ones
    are refused up front.
    """
    hosts = {urlsplit(url).hostname or "" for url in options.urls}
    on_loopback = all(_is_loopback(host) for host in hosts)
    if options.sources is not None:
        if not on_loopback and any(_is_loopback(source) for source in options.sources):
            off = sorted(host for host in hosts if not _is_loopback(host))
            raise BenchError(
                f"--source-addresses on loopback cannot reach {', '.join(off)}: give "
                "addresses of this machine on the way to the target, or none"
            )
        return options.sources
    if not on_loopback:
        return []
    return [f"127.0.0.{2 + index}" for index in range(max(1, workers))]


def worker_count(options: BenchOptions, connections: int) -> int:
    needed = math.ceil(connections / MAX_PER_WORKER)
    return max(1, options.processes, needed)


def split(count: int, parts: int) -> list[int]:
    base, extra = divmod(count, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def check_ports(options: BenchOptions, connections: int, sources: list[str]) -> None:
    per_pair = connections / (len(options.urls) * max(1, len(sources)))
    if per_pair > PORTS_PER_SOURCE:
        raise BenchError(
            f"{connections} connections over {len(options.urls)} target(s) and "
            f"{max(1, len(sources))} source address(es) is {per_pair:.0f} per pair, more "
            f"than the ~28,000 ephemeral ports of one pair: give more --source-addresses "
            f"or more --url targets"
        )


# Resources


def resolve_pids(options: BenchOptions) -> tuple[list[int], list[RedisNode]]:
    """Server PIDs (given, or found by the targets' ports) and the Redis node(s)."""
    servers = list(options.server_pids)
    if not servers:
        for url in options.urls:
            parts = urlsplit(url)
            if _is_loopback(parts.hostname or "") and parts.port:
                pid = procstat.listener_pid(parts.port)
                # A port Docker publishes is held by docker-proxy, not by the server
                # in the container: measuring it would pass its figures off as the
                # server's. Give --server-pid for such servers.
                if pid is not None and procstat.process_name(pid) in procstat.FORWARDERS:
                    continue
                if pid is not None and pid not in servers:
                    servers.append(pid)
    if options.redis_nodes:
        return servers, list(options.redis_nodes)
    redis, port = options.redis_pid, None
    if options.redis_url:
        parts = urlsplit(options.redis_url)
        if _is_loopback(parts.hostname or "") and parts.port:
            port = parts.port
            if redis is None:
                redis = procstat.listener_pid(parts.port)
    return servers, [] if redis is None else [RedisNode("redis", redis, "single", port)]


def commands_processed(node: RedisNode) -> int | None:
    """The node's ``total_commands_processed`` (INFO stats), None when it cannot be asked."""
    if node.port is None:
        return None
    reply = b""
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=2) as sock:
            sock.sendall(b"INFO stats\r\n")
            # A bulk string: "$<length>\r\n<text>\r\n"; read until all of it is in.
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                header, _, body = reply.partition(b"\r\n")
                if header.startswith(b"$") and len(body) >= int(header[1:]) + 2:
                    break
    except (OSError, ValueError):
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.partition(":")[2])
    return None


def _spread(values: Sequence[float | None]) -> float | None:
    """max / min of the values (1.0: perfectly even), None without two positive ones."""
    numbers = [v for v in values if v is not None]
    if len(numbers) < 2 or min(numbers) <= 0:
        return None
    return round(max(numbers) / min(numbers), 2)


def sample_all(pids: Sequence[int]) -> list[procstat.Sample | None]:
    return [procstat.sample(pid) for pid in pids]


def cpu_used(
    before: Sequence[procstat.Sample | None], after: Sequence[procstat.Sample | None]
) -> float | None:
    """CPU seconds the processes used between two readings; None when none was read.

    None, not 0: a run whose servers could not be seen (no PID given or found, as
    for servers in containers or on other hosts) has no CPU figure at all.
    """
    used = [
        last.cpu - first.cpu
        for first, last in zip(before, after, strict=True)
        if first is not None and last is not None
    ]
    return sum(used) if used else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mib(value: float) -> float:
    return round(value / 1024 / 1024, 1)


# Scenarios


async def run_scenario(
    options: BenchOptions, progress: ProgressSink = _no_progress
) -> dict[str, Any]:
    """Run one scenario; returns the result document (JSON-ready)."""
    if not options.urls:
        raise BenchError("no target: give at least one --url")
    started = time.time()
    if options.scenario in ("connect", "idle"):
        result = await _run_connections(options, progress)
    elif options.scenario == "fanout":
        result = await _run_fanout(options, progress)
    elif options.scenario == "churn":
        from wsfleet.bench.churn import run_churn

        try:
            result = await run_churn(options, progress)
        except ValueError as error:
            raise BenchError(str(error)) from None
    else:
        raise BenchError(f"unknown scenario {options.scenario!r}")
    return {
        "scenario": options.scenario,
        "label": options.label or options.dialect,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 2),
        "options": options.to_json(),
        **result,
    }


async def _run_connections(options: BenchOptions, progress: ProgressSink) -> dict[str, Any]:
    count = options.connections
    workers_needed = worker_count(options, count)
    sources = plan_sources(options, workers_needed)
    check_ports(options, count, sources)
    server_pids, _ = resolve_pids(options)
    proxy_pids = list(options.proxy_pids)
    rate = options.connect_rate / workers_needed if options.connect_rate else 0.0
    tasks = []
    first = 0
    for share in split(count, workers_needed):
        tasks.append(
            {
                "scenario": options.scenario,
                "dialect": options.dialect,
                "targets": options.urls,
                "sources": sources,
                "timeout": options.timeout,
                "concurrency": options.concurrency,
                "connect_rate": rate,
                "first": first,
                "count": share,
            }
        )
        first += share

    workers = await start_workers(tasks)
    try:
        before = sample_all(server_pids)
        proxy_before = sample_all(proxy_pids)
        for worker in workers:
            await worker.send({"cmd": "connect"})
        ramp_start = time.perf_counter()

        def show_ramp() -> None:
            opened = total(workers, "opened")
            failed = total(workers, "failed")
            elapsed = max(1e-9, time.perf_counter() - ramp_start)
            progress(
                "connect",
                opened + failed,
                count,
                f"{opened} open, {failed} failed, {opened / elapsed:.0f}/s",
            )

        ready = await all_expect(workers, "ready", options.phase_timeout, show_ramp)
        ramp_seconds = time.perf_counter() - ramp_start
        opened = sum(event["opened"] for event in ready)

        checked: list[dict[str, Any]] = []
        if options.hold > 0:
            hold_end = time.perf_counter() + options.hold
            while (left := hold_end - time.perf_counter()) > 0:
                progress(
                    "hold",
                    options.hold - left,
                    options.hold,
                    f"{opened - total(workers, 'server_closed')} open",
                )
                await asyncio.sleep(min(0.25, left))
        await asyncio.sleep(options.settle)
        after = sample_all(server_pids)
        proxy_after = sample_all(proxy_pids)
        if options.check:
            for worker in workers:
                await worker.send({"cmd": "check", "timeout": options.timeout})
            checked = await all_expect(
                workers,
                "checked",
                options.timeout + 30,
                lambda: progress("check", 0, 1, "pinging every connection"),
            )
        results = await _finish(workers)
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)

    handshakes = LatencyHistogram()
    failures: Counter[str] = Counter()
    close_codes: Counter[str] = Counter()
    for result in results:
        handshakes.merge(LatencyHistogram.from_json(result["handshake"]))
        failures.update(result["failures"])
        close_codes.update(result["close_codes"])
    servers = _server_rows(server_pids, before, after)
    grown = sum(row["rss_after"] - row["rss_before"] for row in servers)
    rss_after_total = sum(row["rss_after"] for row in servers)
    document: dict[str, Any] = {
        "workers": len(workers),
        "sources": sources,
        "connections": {
            "requested": count,
            "opened": opened,
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "closed_by_server": sum(r["server_closed"] for r in results),
            "close_codes": dict(close_codes),
        },
        "ramp_seconds": round(ramp_seconds, 3),
        "connects_per_second": round(opened / ramp_seconds, 1) if ramp_seconds > 0 else None,
        "handshake_latency": summarize(handshakes),
        "servers": servers,
        "server_rss_before_mib": _mib(sum(row["rss_before"] for row in servers)),
        "server_rss_after_mib": _mib(rss_after_total),
        "memory_per_connection_bytes": round(grown / opened) if opened and servers else None,
        # From before the ramp to after the settle (and the hold, for idle).
        "server_cpu_seconds": _round(cpu_used(before, after)),
        "proxy_cpu_seconds": _round(cpu_used(proxy_before, proxy_after)),
        "client_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 2),
        "histograms": {"handshake": handshakes.to_json()},
    }
    if options.check:
        document["held"] = {
            "hold_seconds": options.hold,
            "alive": sum(event["alive"] for event in checked),
            "answered": sum(event["answered"] for event in checked),
        }
    return document


def _server_rows(
    pids: Sequence[int],
    before: Sequence[procstat.Sample | None],
    after: Sequence[procstat.Sample | None],
) -> list[dict[str, Any]]:
    rows = []
    for pid, first, last in zip(pids, before, after, strict=True):
        if first is None or last is None:
            continue
        rows.append(
            {
                "pid": pid,
                "rss_before": first.rss,
                "rss_after": last.rss,
                "cpu_seconds": round(last.cpu - first.cpu, 3),
            }
        )
    return rows


async def _finish(workers: Sequence[WorkerHandle]) -> list[dict[str, Any]]:
    for worker in workers:
        await worker.send({"cmd": "finish"})
    return await all_expect(workers, "result", 60)


def drain_complete(unique: int, expected: int, unsettled: int) -> bool:
    """Whether every delivery of an acked message is in, by the workers' counters.

    ``unique`` counts every message a member received, acked or not; ``expected``
    only the acked ones. With publishes left without an ack (no answer before the
    end of the publish phase, or an error), their deliveries count in ``unique``
    too and it may reach ``expected`` while acked deliveries are still on their
    way; stopping then reports those as lost. So then only the quiet period
    (no new delivery for drain_timeout) ends the wait.
    """
    return unsettled == 0 and unique >= expected


def fanout_plan(
    options: BenchOptions, workers: int, run_id: str
) -> tuple[list[list[list[Any]]], list[list[dict[str, Any]]]]:
    """Members and publishers of each worker.

    Member ``g`` (room ``g // C``) goes to target ``g % K``, so the members of one
    room sit on every instance. Publisher ``j`` publishes to the rooms ``r`` with
    ``r % P == j`` (to room ``j % R`` when there are more publishers than rooms),
    from target ``j % K``.
    """
    rooms = [f"bench-{run_id}-{index}" for index in range(options.rooms)]
    members = [
        [room_index * options.clients_per_room + slot, room]
        for room_index, room in enumerate(rooms)
        for slot in range(options.clients_per_room)
    ]
    member_shares: list[list[list[Any]]] = []
    start = 0
    for share in split(len(members), workers):
        member_shares.append(members[start : start + share])
        start += share
    publisher_shares: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for index in range(options.publishers):
        if options.publishers <= options.rooms:
            owned = rooms[index :: options.publishers]
        else:
            owned = [rooms[index % options.rooms]]
        publisher_shares[index % workers].append(
            {"id": f"p{index}", "target": index, "rooms": owned}
        )
    return member_shares, publisher_shares


async def _run_fanout(options: BenchOptions, progress: ProgressSink) -> dict[str, Any]:
    if options.rooms < 1 or options.clients_per_room < 1 or options.publishers < 1:
        raise BenchError("fanout needs at least one room, one member per room, one publisher")
    connections = options.rooms * options.clients_per_room + options.publishers
    workers_needed = worker_count(options, connections)
    sources = plan_sources(options, workers_needed)
    check_ports(options, connections, sources)
    server_pids, redis_nodes = resolve_pids(options)
    run_id = secrets.token_hex(3)
    member_shares, publisher_shares = fanout_plan(options, workers_needed, run_id)
    publisher_total = max(1, options.publishers)
    tasks = [
        {
            "scenario": "fanout",
            "dialect": options.dialect,
            "targets": options.urls,
            "sources": sources,
            "timeout": options.timeout,
            "concurrency": options.concurrency,
            "connect_rate": options.connect_rate / workers_needed if options.connect_rate else 0,
            "subscribers": members,
            "publishers": publishers,
        }
        for members, publishers in zip(member_shares, publisher_shares, strict=True)
    ]

    workers = await start_workers(tasks)
    try:
        for worker in workers:
            await worker.send({"cmd": "connect"})
        ramp_start = time.perf_counter()
        ready = await all_expect(
            workers,
            "ready",
            options.phase_timeout,
            lambda: progress(
                "connect",
                total(workers, "opened") + total(workers, "failed"),
                connections,
                f"{total(workers, 'opened')} open, {total(workers, 'failed')} failed",
            ),
        )
        ramp_seconds = time.perf_counter() - ramp_start
        members_by_room: Counter[str] = Counter()
        for event in ready:
            members_by_room.update(event["members_by_room"])

        pids = [*server_pids, *(node.pid for node in redis_nodes), *options.proxy_pids]
        before = sample_all(pids)
        commands_before = [commands_processed(node) for node in redis_nodes]
        go = time.perf_counter()
        for worker, publishers in zip(workers, publisher_shares, strict=True):
            share = len(publishers) / publisher_total
            await worker.send(
                {
                    "cmd": "publish",
                    "rate": options.rate * share,
                    "duration": options.duration,
                    "payload": options.payload,
                    "settle": max(5.0, options.drain_timeout),
                }
            )

        def show_publish() -> None:
            elapsed = time.perf_counter() - go
            progress(
                "publish",
                min(elapsed, options.duration),
                options.duration,
                f"{total(workers, 'sent')} sent, {total(workers, 'received')} delivered, "
                f"{total(workers, 'received') / max(elapsed, 1e-9):.0f}/s",
            )

        published = await all_expect(
            workers, "published", options.duration + options.phase_timeout, show_publish
        )
        acked_by_room: Counter[str] = Counter()
        publish_errors: Counter[str] = Counter()
        sent = 0
        for event in published:
            acked_by_room.update(event["acked"])
            publish_errors.update(event["errors"])
            sent += event["sent"]
        expected = sum(acked_by_room[room] * n for room, n in members_by_room.items())

        # Wait until every member has what was acked, or nothing moves any more.
        unsettled = sent - sum(acked_by_room.values())
        last_unique, last_change = -1, time.perf_counter()
        while True:
            unique = total(workers, "unique")
            now = time.perf_counter()
            if unique != last_unique:
                last_unique, last_change = unique, now
            progress("deliver", min(unique, expected), max(expected, 1), f"{unique}/{expected}")
            if drain_complete(unique, expected, unsettled):
                drained = now
                break
            if now - last_change > options.drain_timeout:
                # The deliveries ended at the last progress, not drain_timeout later.
                drained = last_change
                break
            await asyncio.sleep(0.05)
        after = sample_all(pids)
        commands_after = [commands_processed(node) for node in redis_nodes]
        results = await _finish(workers)
    finally:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)

    latency = LatencyHistogram()
    acks = LatencyHistogram()
    handshakes = LatencyHistogram()
    failures: Counter[str] = Counter()
    unique_by_room: Counter[str] = Counter()
    close_codes: Counter[str] = Counter()
    for result in results:
        latency.merge(LatencyHistogram.from_json(result["latency"]))
        acks.merge(LatencyHistogram.from_json(result["ack_latency"]))
        handshakes.merge(LatencyHistogram.from_json(result["handshake"]))
        failures.update(result["failures"])
        unique_by_room.update(result["unique_by_room"])
        close_codes.update(result["close_codes"])
    lost = sum(
        max(0, acked_by_room[room] * n - unique_by_room[room])
        for room, n in members_by_room.items()
    )
    delivered = sum(r["received"] for r in results)
    duplicated = sum(r["duplicates"] for r in results)
    window = drained - go
    acked = sum(acked_by_room.values())

    def cpu(index: int) -> float | None:
        first, last = before[index], after[index]
        if first is None or last is None:
            return None
        return last.cpu - first.cpu

    server_cpu = [cpu(i) for i in range(len(server_pids))]
    server_cpu_measured = [c for c in server_cpu if c is not None]
    server_cpu_total = sum(server_cpu_measured) if server_cpu_measured else None
    node_cpu = [cpu(len(server_pids) + i) for i in range(len(redis_nodes))]
    proxies_from = len(server_pids) + len(redis_nodes)
    proxy_cpu = cpu_used(before[proxies_from:], after[proxies_from:])
    redis_cpu = sum(c for c in node_cpu if c is not None) if redis_nodes else None
    node_commands = [
        None if first is None or last is None else float(last - first)
        for first, last in zip(commands_before, commands_after, strict=True)
    ]
    primaries = [i for i, node in enumerate(redis_nodes) if node.role == "primary"]
    return {
        "workers": len(workers),
        "sources": sources,
        "connections": {
            "members": sum(members_by_room.values()),
            "members_wanted": options.rooms * options.clients_per_room,
            "publishers": sum(len(p) for p in publisher_shares),
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "closed_by_server": sum(r["server_closed"] for r in results),
            "close_codes": dict(close_codes),
            "ramp_seconds": round(ramp_seconds, 3),
        },
        "published": {
            "sent": sent,
            "acked": acked,
            "errors": dict(publish_errors),
            "unacked": max(0, sent - acked - sum(publish_errors.values())),
            "per_second": round(sent / options.duration, 1),
        },
        "expected": expected,
        "acked_by_room": dict(acked_by_room),
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "window_seconds": round(window, 3),
        "delivered_per_second": round(delivered / window, 1) if window > 0 else None,
        "latency": summarize(latency),
        "ack_latency": summarize(acks),
        "handshake_latency": summarize(handshakes),
        "server_cpu_seconds": _round(server_cpu_total),
        "server_cpu_cores": _round(server_cpu_total / window)
        if server_cpu_total is not None and window > 0
        else None,
        "deliveries_per_server_cpu_second": (
            round(delivered / server_cpu_total) if server_cpu_total else None
        ),
        "proxy_cpu_seconds": _round(proxy_cpu),
        "proxy_cpu_cores": _round(proxy_cpu / window)
        if proxy_cpu is not None and window > 0
        else None,
        "redis_cpu_seconds": None if redis_cpu is None else round(redis_cpu, 3),
        "redis_cpu_cores": None
        if redis_cpu is None or window <= 0
        else round(redis_cpu / window, 3),
        # CPU milliseconds of all Redis nodes together per 1,000 deliveries.
        "redis_cpu_ms_per_1000_deliveries": None
        if redis_cpu is None or delivered <= 0
        else round(redis_cpu * 1e6 / delivered, 3),
        "redis_nodes": [
            {
                "name": node.name,
                "role": node.role,
                "pid": node.pid,
                "cpu_seconds": None if c is None else round(c, 3),
                "commands": None if n is None else int(n),
            }
            for node, c, n in zip(redis_nodes, node_cpu, node_commands, strict=True)
        ],
        # How evenly the primaries of a cluster shared the work: max / min.
        "primaries_cpu_spread": _spread([node_cpu[i] for i in primaries]),
        "primaries_commands_spread": _spread([node_commands[i] for i in primaries]),
        "servers": [
            {
                "pid": pid,
                "cpu_seconds": None if c is None else round(c, 3),
                "rss_after": None if after[i] is None else after[i].rss,  # type: ignore[union-attr]
            }
            for i, (pid, c) in enumerate(zip(server_pids, server_cpu, strict=True))
        ],
        "client_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 2),
        "histograms": {
            "latency": latency.to_json(),
            "ack": acks.to_json(),
            "handshake": handshakes.to_json(),
        },
    }
