"""``wsfleet bench churn``: members leave and resume continuously under fanout.

R rooms x C members spread over the instances, P publishers at a total rate for a
duration. In each room ``churners`` members keep cycling: read a few messages,
``leave``, then ``join`` again with ``since`` (the last offset they got) and
``epoch``, which must replay exactly what they missed. The others stay. The truth
is the offsets the publishers had acknowledged; every member must have each of them
after its first ``joined.offset`` once, in order.

Figures: resumes and how many were not recovered, duplicates, gaps (an offset
missing between two received ones), out-of-order deliveries, lost messages
(missing at the end), resume latency (``join`` sent to the last replayed message
received) and end-to-end latency.

It runs in the coordinator process (one asyncio task per connection), which is
enough for the hundreds of connections that churn needs; ``fanout`` is the scenario
for big fleets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from wsfleet import codec
from wsfleet.bench.stats import LatencyHistogram, summarize
from wsfleet.protocol import offset_key

__all__ = ["run_churn"]

ProgressSink = Callable[[str, float, float, str], None]


@dataclass(slots=True)
class Member:
    room: str
    url: str
    churner: bool
    # One segment per membership: (starting offset, offsets received in order).
    segments: list[tuple[str | None, list[str]]] = field(default_factory=list)
    resumes: int = 0
    not_recovered: int = 0
    unavailable: int = 0

    def last(self) -> str | None:
        for start, received in reversed(self.segments):
            if received:
                return received[-1]
            if start is not None:
                return start
        return None


class Stop(Exception):
    """The member was told to stop while it waited for a frame."""


async def _frame(connection: ClientConnection, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = codec.loads(await connection.recv())
        return frame


def _send(connection: ClientConnection, frame: dict[str, Any]) -> Any:
    return connection.send(codec.dumps(frame).decode())


async def _join(
    connection: ClientConnection, member: Member, timeout: float, **extra: Any
) -> dict[str, Any]:
    while True:
        await _send(connection, {"type": "join", "room": member.room, **extra})
        frame = await _frame(connection, timeout)
        if frame["type"] == "joined":
            return frame
        if frame.get("code") != "unavailable":
            raise RuntimeError(f"join refused: {frame}")
        member.unavailable += 1
        await asyncio.sleep(0.05)


async def _run_member(
    member: Member,
    timeout: float,
    stopping: asyncio.Event,
    latency: LatencyHistogram,
    resume_latency: LatencyHistogram,
    rng: random.Random,
) -> None:
    connection = await websockets.connect(member.url, compression=None, open_timeout=timeout)
    try:
        welcome = await _frame(connection, timeout)
        assert welcome["type"] == "welcome", welcome
        joined = await _join(connection, member, timeout)
        epoch = joined["epoch"]
        received: list[str] = []
        member.segments.append((joined["offset"], received))

        def take(frame: dict[str, Any]) -> bool:
            if frame["type"] != "message":
                return False
            received.append(frame["offset"])
            content = frame["content"]
            if isinstance(content, dict) and isinstance(content.get("t"), float):
                latency.record(max(0.0, time.time() - content["t"]))
            return True

        while not stopping.is_set():
            if not member.churner:
                with contextlib.suppress(TimeoutError):
                    take(await _frame(connection, 0.2))
                continue
            want = len(received) + rng.randint(1, 4)
            deadline = time.monotonic() + 1.0
            while len(received) < want and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    take(await _frame(connection, 0.2))
            await _send(connection, {"type": "leave", "room": member.room})
            while (frame := await _frame(connection, timeout))["type"] != "left":
                take(frame)
            since = member.last()
            if since is None:
                joined = await _join(connection, member, timeout)
            else:
                asked = time.perf_counter()
                joined = await _join(connection, member, timeout, since=since, epoch=epoch)
                member.resumes += 1
                if not joined["recovered"]:
                    member.not_recovered += 1
            epoch = joined["epoch"]
            received = []
            start = since if joined["recovered"] else joined["offset"]
            member.segments.append((start, received))
            for _ in range(joined["replayed"]):
                take(await _frame(connection, timeout))
            if since is not None:
                resume_latency.record(time.perf_counter() - asked)
        # Stay and read until the coordinator has seen everything arrive (it cancels).
        while True:
            with contextlib.suppress(TimeoutError):
                take(await _frame(connection, 0.5))
    finally:
        await connection.close()


async def _run_publisher(
    url: str,
    rooms: list[str],
    rate: float,
    duration: float,
    payload: int,
    timeout: float,
    acked: dict[str, list[str]],
    errors: Counter[str],
) -> int:
    connection = await websockets.connect(url, compression=None, open_timeout=timeout)
    sent = 0
    try:
        await _frame(connection, timeout)  # welcome
        pad = "x" * max(0, payload - 40)
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration:
            room = rooms[sent % len(rooms)]
            content = {"n": sent, "t": time.time(), "pad": pad}
            await _send(
                connection, {"type": "message", "room": room, "content": content, "id": str(sent)}
            )
            sent += 1
            frame = await _frame(connection, timeout)
            if frame["type"] == "ack":
                acked[frame["room"]].append(frame["offset"])
            else:
                errors[str(frame.get("code"))] += 1
            ahead = sent / rate - elapsed
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await connection.close()
    return sent


def check_member(member: Member, truth: list[str]) -> Counter[str]:
    """Duplicates, gaps, out-of-order and lost offsets of one member against the truth."""
    figures: Counter[str] = Counter()
    everything = [offset for _, received in member.segments for offset in received]
    figures["duplicates"] = len(everything) - len(set(everything))
    figures["out_of_order"] = sum(
        1
        for before, after in itertools.pairwise(everything)
        if offset_key(after) <= offset_key(before)
    )
    keys = [offset_key(offset) for offset in truth]
    for number, (start, received) in enumerate(member.segments):
        floor = offset_key(start) if start is not None else (-1, -1)
        got = set(received)
        if received:
            top = max(offset_key(offset) for offset in received)
            figures["gaps"] += sum(
                1
                for offset, key in zip(truth, keys, strict=True)
                if floor < key <= top and offset not in got
            )
        if number == len(member.segments) - 1:
            top = max((offset_key(offset) for offset in received), default=floor)
            figures["lost"] += sum(1 for key in keys if key > top)
    return figures


async def run_churn(options: Any, progress: ProgressSink) -> dict[str, Any]:
    """Run the scenario for ``options`` (a :class:`wsfleet.bench.runner.BenchOptions`)."""
    if options.dialect != "wsfleet":
        raise ValueError("churn needs the wsfleet dialect (resume with since/epoch)")
    run_id = secrets.token_hex(3)
    rooms = [f"churn-{run_id}-{index}" for index in range(options.rooms)]
    members = [
        Member(
            room,
            options.urls[(r * options.clients_per_room + slot) % len(options.urls)],
            churner=slot < options.churners,
        )
        for r, room in enumerate(rooms)
        for slot in range(options.clients_per_room)
    ]
    latency, resume_latency = LatencyHistogram(), LatencyHistogram()
    stopping = asyncio.Event()
    rng = random.Random(options.seed)
    member_tasks = [
        asyncio.create_task(
            _run_member(
                member,
                options.timeout,
                stopping,
                latency,
                resume_latency,
                random.Random(rng.random()),
            )
        )
        for member in members
    ]
    while not all(member.segments for member in members):
        progress("join", sum(1 for m in members if m.segments), len(members), "")
        for task in member_tasks:
            if task.done():
                task.result()
        await asyncio.sleep(0.05)

    acked: dict[str, list[str]] = {room: [] for room in rooms}
    errors: Counter[str] = Counter()
    publishers = max(1, options.publishers)
    go = time.perf_counter()
    publisher_tasks = [
        asyncio.create_task(
            _run_publisher(
                options.urls[index % len(options.urls)],
                rooms[index::publishers] or [rooms[index % len(rooms)]],
                options.rate / publishers,
                options.duration,
                options.payload,
                options.timeout,
                acked,
                errors,
            )
        )
        for index in range(publishers)
    ]
    while not all(task.done() for task in publisher_tasks):
        elapsed = time.perf_counter() - go
        resumes = sum(m.resumes for m in members)
        progress("publish", min(elapsed, options.duration), options.duration, f"{resumes} resumes")
        await asyncio.sleep(0.1)
    sent = sum(task.result() for task in publisher_tasks)
    stopping.set()
    # Churners finish their cycle; then everyone reads until it has every acked offset
    # of its room, or nothing more arrives for drain_timeout.
    last = {room: max(offsets, key=offset_key) for room, offsets in acked.items() if offsets}

    def caught_up(member: Member) -> bool:
        newest = member.last()
        goal = last.get(member.room)
        return goal is None or (newest is not None and offset_key(newest) >= offset_key(goal))

    drain_end = time.perf_counter() + options.drain_timeout
    while not all(caught_up(m) for m in members) and time.perf_counter() < drain_end:  # noqa: ASYNC110 - polling what member tasks recorded
        await asyncio.sleep(0.05)
    for task in member_tasks:
        task.cancel()
    outcomes = await asyncio.gather(*member_tasks, return_exceptions=True)
    failures = Counter(
        type(outcome).__name__
        for outcome in outcomes
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError)
    )
    window = time.perf_counter() - go

    figures: Counter[str] = Counter()
    for member in members:
        truth = sorted(acked[member.room], key=offset_key)
        figures.update(check_member(member, truth))
    delivered = sum(len(received) for m in members for _, received in m.segments)
    return {
        "connections": {
            "members": len(members),
            "churners": sum(1 for m in members if m.churner),
            "publishers": publishers,
            "failures": dict(failures),
        },
        "published": {
            "sent": sent,
            "acked": sum(len(offsets) for offsets in acked.values()),
            "errors": dict(errors),
            "per_second": round(sent / options.duration, 1),
        },
        "resumes": sum(m.resumes for m in members),
        "not_recovered": sum(m.not_recovered for m in members),
        "unavailable_joins": sum(m.unavailable for m in members),
        "delivered": delivered,
        "duplicated": figures["duplicates"],
        "gaps": figures["gaps"],
        "out_of_order": figures["out_of_order"],
        "lost": figures["lost"],
        "window_seconds": round(window, 3),
        "resume_latency": summarize(resume_latency),
        "latency": summarize(latency),
        "histograms": {"latency": latency.to_json(), "resume": resume_latency.to_json()},
    }
