"""Every member gets every offset of its room once, in order, while things move.

Two server instances on one real redis-server, a steady stream of publishes, and
members that keep leaving, rejoining with ``since``/``epoch`` and joining plainly,
while Redis connections are killed under them: subscriber connections
(``CLIENT KILL TYPE pubsub``) and pooled command connections (``CLIENT KILL TYPE
normal``). The truth is the rooms' history streams in Redis: each segment of a
member's life (from ``joined`` to ``left``) must be exactly the slice of its room's
stream after its starting offset. Then one instance is killed with SIGKILL and its
clients resume on the other.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from conftest import Launcher, RedisProcess, ServerProcess, connect, send_json, unique_room
from wsfleet.protocol import offset_key

SERVER_FLAGS = (
    "--history-size",
    "100000",
    "--rate-limit",
    "100000",
    "--rate-burst",
    "100000",
    "--log-level",
    "warning",
)
ROOMS = 4
CHURNERS = 24
PLAIN_JOINS = 500
RESUME_CYCLES = 500
KILLS_EACH = 10


@dataclass
class Segment:
    """What one member received in one room between ``joined`` and ``left``."""

    room: str
    kind: str  # "plain" or "resume"
    start: str | None  # joined.offset (plain) or since (resume)
    received: list[str] = field(default_factory=list)


@dataclass
class Tally:
    plain: int = 0
    resumed: int = 0
    not_recovered: int = 0
    unavailable: int = 0
    segments: list[Segment] = field(default_factory=list)


async def stream_offsets(redis: aioredis.Redis, room: str) -> tuple[list[str], list[bytes]]:
    entries: Any = await redis.xrange(f"wsfleet:{{{room}}}:history", "-", "+")
    return [raw.decode() for raw, _ in entries], [fields[b"c"] for _, fields in entries]


def check_segments(segments: list[Segment], truth: dict[str, list[str]]) -> dict[str, int]:
    """Duplicates, gaps, out-of-order and at-or-below-start deliveries over all segments."""
    figures = Counter(duplicates=0, gaps=0, out_of_order=0, at_or_below_start=0, unknown=0)
    for segment in segments:
        stream = truth[segment.room]
        index = {offset: n for n, offset in enumerate(stream)}
        first = 0 if segment.start is None else index.get(segment.start, -2) + 1
        if first < 0:
            figures["unknown"] += 1
            continue
        seen: set[str] = set()
        previous: str | None = None
        for offset in segment.received:
            if offset in seen:
                figures["duplicates"] += 1
            seen.add(offset)
            if previous is not None and offset_key(offset) <= offset_key(previous):
                figures["out_of_order"] += 1
            if segment.start is not None and offset_key(offset) <= offset_key(segment.start):
                figures["at_or_below_start"] += 1
            if offset not in index:
                figures["unknown"] += 1
            previous = offset
        if segment.received:
            newest = max(segment.received, key=offset_key)
            if newest in index:
                expected = set(stream[first : index[newest] + 1])
                figures["gaps"] += len(expected - seen)
    return dict(figures)


async def next_frame(connection: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await connection.recv())
        return frame


async def join_room(
    connection: ClientConnection, room: str, tally: Tally, **extra: Any
) -> dict[str, Any]:
    """Join, retrying while Redis is away (``unavailable``); returns ``joined``."""
    while True:
        await send_json(connection, {"type": "join", "room": room, **extra})
        frame = await next_frame(connection)
        if frame["type"] == "joined":
            return frame
        assert frame["type"] == "error" and frame["code"] == "unavailable", frame
        tally.unavailable += 1
        await asyncio.sleep(0.02)


async def read_until(
    connection: ClientConnection, segment: Segment, want: int, kind: str | None
) -> None:
    """Collect ``message`` frames into ``segment`` until ``want`` of them or a ``kind`` frame."""
    goal = len(segment.received) + want
    while kind is not None or len(segment.received) < goal:
        frame = await next_frame(connection)
        if frame["type"] == "message":
            assert frame["room"] == segment.room, frame
            segment.received.append(frame["offset"])
        elif frame["type"] == kind:
            return
        else:
            raise AssertionError(f"unexpected frame {frame}")


async def churner(
    url: str, rooms: list[str], rng: random.Random, tally: Tally, stop: asyncio.Event
) -> None:
    connection, _ = await connect(url)
    while not stop.is_set():
        room = rng.choice(rooms)
        joined = await join_room(connection, room, tally)
        segment = Segment(room, "plain", joined["offset"])
        tally.segments.append(segment)
        tally.plain += 1
        await read_until(connection, segment, rng.randint(1, 3), None)
        for _ in range(rng.randint(1, 3)):
            await send_json(connection, {"type": "leave", "room": room})
            await read_until(connection, segment, 0, "left")
            since = segment.received[-1] if segment.received else segment.start
            if since is None:
                break
            rejoined = await join_room(connection, room, tally, since=since, epoch=joined["epoch"])
            if not rejoined["recovered"]:
                tally.not_recovered += 1
                break
            segment = Segment(room, "resume", since)
            tally.segments.append(segment)
            tally.resumed += 1
            await read_until(connection, segment, rng.randint(0, 2), None)
        await send_json(connection, {"type": "leave", "room": room})
        await read_until(connection, segment, 0, "left")
    await connection.close()


async def publisher(
    url: str, name: str, rooms: list[str], stop: asyncio.Event, acked: dict[str, str]
) -> None:
    """A steady stream: one message at a time, each retried with its id while unavailable."""
    connection, _ = await connect(url)
    n = 0
    while not stop.is_set():
        room = rooms[n % len(rooms)]
        content = f"{name}-{n}"
        while True:
            await send_json(
                connection, {"type": "message", "room": room, "content": content, "id": content}
            )
            frame = await next_frame(connection)
            if frame["type"] == "ack":
                acked[content] = frame["offset"]
                break
            assert frame["type"] == "error" and frame["code"] == "unavailable", frame
            await asyncio.sleep(0.02)
        n += 1
        await asyncio.sleep(0.004)
    await connection.close()


async def killer(redis: aioredis.Redis, kinds: list[str], every: float) -> dict[str, int]:
    """Run one CLIENT KILL per entry of ``kinds``; count those that killed something."""
    killed: Counter[str] = Counter()
    for kind in kinds:
        await asyncio.sleep(every)
        # SKIPME (the default) spares this test's own connection.
        victims = await redis.execute_command("CLIENT", "KILL", "TYPE", kind)  # type: ignore[no-untyped-call]
        killed[kind] += int(victims) > 0
        killed[f"{kind}_connections"] += int(victims)
    return dict(killed)


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> Any:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_churn_and_redis_kills_deliver_every_offset_once_in_order(
    launch: Launcher, redis_client: aioredis.Redis
) -> None:
    servers = [launch(*SERVER_FLAGS), launch(*SERVER_FLAGS)]
    rooms = [unique_room("once") for _ in range(ROOMS)]
    stop_churn, stop_stream = asyncio.Event(), asyncio.Event()
    acked: dict[str, str] = {}
    tally = Tally()
    rng = random.Random(11)
    publishers = [
        asyncio.create_task(publisher(server.url, f"p{n}", rooms, stop_stream, acked))
        for n, server in enumerate(servers)
    ]
    churners = [
        asyncio.create_task(
            churner(
                servers[n % 2].url,
                rooms,
                random.Random(rng.random()),
                tally,
                stop_churn,
            )
        )
        for n in range(CHURNERS)
    ]
    kinds = ["pubsub", "normal"] * KILLS_EACH
    killed = await killer(redis_client, kinds, every=0.3)
    while tally.plain < PLAIN_JOINS or tally.resumed < RESUME_CYCLES:
        await asyncio.sleep(0.05)
        for task in (*churners, *publishers):
            if task.done():
                task.result()  # a failed task fails the test with its own error
    stop_churn.set()
    await asyncio.wait_for(asyncio.gather(*churners), 30)
    stop_stream.set()
    await asyncio.wait_for(asyncio.gather(*publishers), 30)

    truth: dict[str, list[str]] = {}
    stored: Counter[bytes] = Counter()
    for room in rooms:
        truth[room], contents = await stream_offsets(redis_client, room)
        stored.update(contents)
    figures = check_segments(tally.segments, truth)
    figures["stored_twice"] = sum(1 for count in stored.values() if count > 1)
    figures["acked_not_stored"] = sum(
        1 for offset in acked.values() if not any(offset in truth[room] for room in rooms)
    )
    figures["not_recovered"] = tally.not_recovered
    print(
        f"\nchurn: {tally.plain} plain joins, {tally.resumed} resumes, "
        f"{len(acked)} messages, kills {killed}, {tally.unavailable} unavailable joins, "
        f"figures {figures}"
    )
    assert killed.get("pubsub", 0) >= KILLS_EACH and killed.get("normal", 0) >= KILLS_EACH
    assert figures == dict.fromkeys(figures, 0), figures


@dataclass
class Follower:
    """A member on the instance that gets killed; it resumes on the other one."""

    room: str
    received: list[str] = field(default_factory=list)
    epoch: str | None = None
    start: str | None = None
    resumed_recovered: bool | None = None
    resumed_on: str | None = None


async def follow(
    first: ServerProcess, second: ServerProcess, follower: Follower, until: asyncio.Event
) -> None:
    connection, _ = await connect(first.url)
    await send_json(connection, {"type": "join", "room": follower.room})
    joined = await next_frame(connection)
    assert joined["type"] == "joined", joined
    follower.epoch, follower.start = joined["epoch"], joined["offset"]
    try:
        while True:
            frame = await next_frame(connection, timeout=30)
            if frame["type"] == "message":
                follower.received.append(frame["offset"])
    except ConnectionClosed:
        pass
    since = follower.received[-1] if follower.received else follower.start
    connection, welcome = await connect(second.url)
    follower.resumed_on = welcome["server"]
    await send_json(
        connection, {"type": "join", "room": follower.room, "since": since, "epoch": follower.epoch}
    )
    rejoined = await next_frame(connection)
    assert rejoined["type"] == "joined", rejoined
    follower.resumed_recovered = rejoined["recovered"]
    while True:
        try:
            frame = await next_frame(connection, timeout=0.3)
        except TimeoutError:
            if until.is_set():
                break
            continue
        if frame["type"] == "message":
            follower.received.append(frame["offset"])
    await connection.close()


async def test_kill_9_of_an_instance_every_client_resumes_on_the_other(
    launch: Launcher, redis_client: aioredis.Redis
) -> None:
    victim, survivor = launch(*SERVER_FLAGS), launch(*SERVER_FLAGS)
    rooms = [unique_room("kill9") for _ in range(2)]
    followers = [Follower(rooms[n % 2]) for n in range(40)]
    stop_stream, drained = asyncio.Event(), asyncio.Event()
    acked: dict[str, str] = {}
    tasks = [asyncio.create_task(follow(victim, survivor, f, drained)) for f in followers]
    # Every follower has joined before the stream starts.
    await asyncio.sleep(0.5)
    stream = asyncio.create_task(publisher(survivor.url, "k", rooms, stop_stream, acked))
    while len(acked) < 100:
        await asyncio.sleep(0.01)
    victim.signal(signal.SIGKILL)
    while len(acked) < 300:
        await asyncio.sleep(0.01)
    stop_stream.set()
    await stream
    # Every acked message reaches the survivor's members; then the followers stop.
    await asyncio.sleep(1.0)
    drained.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)

    truth = {room: (await stream_offsets(redis_client, room))[0] for room in rooms}
    lost = duplicated = misordered = 0
    for follower in followers:
        stream_ = truth[follower.room]
        start = 0 if follower.start is None else stream_.index(follower.start) + 1
        expected = stream_[start:]
        duplicated += len(follower.received) - len(set(follower.received))
        lost += len(set(expected) - set(follower.received))
        misordered += follower.received != sorted(set(follower.received), key=offset_key)
    recovered = sum(1 for f in followers if f.resumed_recovered)
    on_survivor = sum(1 for f in followers if f.resumed_on == f"test-{survivor.port}")
    print(
        f"\nkill -9: {len(followers)} clients, {recovered} recovered, {on_survivor} on the "
        f"survivor, {len(acked)} messages, {lost} lost, {duplicated} duplicated, "
        f"{misordered} out of order"
    )
    assert (recovered, on_survivor, lost, duplicated, misordered) == (
        len(followers),
        len(followers),
        0,
        0,
        0,
    )


async def test_gap_fill_after_a_subscriber_outage_and_resync_when_history_lost_it(
    launch: Launcher, redis_client: aioredis.Redis
) -> None:
    """While instance A's subscriber is away, messages are published on B: A fills the
    gap from history, once each; when history no longer holds what A's members last
    got, they get ``joined`` again with ``recovered: false`` instead of a silent gap."""
    a, b = launch(*SERVER_FLAGS), launch(*SERVER_FLAGS)
    room = unique_room("gap")
    member, _ = await connect(a.url)
    await send_json(member, {"type": "join", "room": room})
    assert (await next_frame(member))["type"] == "joined"
    writer, _ = await connect(b.url)

    async def publish_one(content: str) -> str:
        while True:
            await send_json(
                writer, {"type": "message", "room": room, "content": content, "id": content}
            )
            frame = await next_frame(writer)
            if frame["type"] == "ack":
                offset: str = frame["offset"]
                return offset
            assert frame["code"] == "unavailable", frame
            await asyncio.sleep(0.02)

    async def outage(during: Any) -> None:
        """Kill A's subscriber and keep it from reconnecting while ``during`` runs."""
        # No new connection from now on (the ones open stay), then A's subscriber goes:
        # B has no local room, so A's is the only subscriber connection.
        await redis_client.config_set("maxclients", 1)
        killed = await redis_client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # type: ignore[no-untyped-call]
        assert int(killed) == 1
        try:
            await during()
        finally:
            await redis_client.config_set("maxclients", 10000)

    first = await publish_one("first")
    assert (await next_frame(member))["offset"] == first

    missed: list[str] = []

    async def publish_two() -> None:
        missed.append(await publish_one("gap1"))
        missed.append(await publish_one("gap2"))

    await outage(publish_two)
    filled = [(await next_frame(member))["offset"] for _ in range(2)]
    assert filled == missed
    live = await publish_one("live")
    assert (await next_frame(member))["offset"] == live

    async def publish_and_trim() -> None:
        await publish_one("lost1")
        await publish_one("lost2")
        # History keeps only the newest entry: `live`, the last one A delivered, is gone.
        await redis_client.xtrim(f"wsfleet:{{{room}}}:history", maxlen=1, approximate=False)

    await outage(publish_and_trim)
    resync = await next_frame(member)
    assert (resync["type"], resync["recovered"], resync["replayed"]) == ("joined", False, 0)
    after = await publish_one("after")
    assert (await next_frame(member))["offset"] == after
    await member.close()
    await writer.close()
