"""Cluster mode on a real Redis Cluster: 3 primaries, 3 replicas, on loopback.

Two wsfleet instances with ``--redis-cluster``, rooms on every shard (room names
picked by ``CLUSTER KEYSLOT``), one publisher per room and instance, and listeners
that keep resuming: each one closes its connection now and then and joins again
with ``since``/``epoch`` on the other instance. The truth is what publishers got
acknowledged: every listener must receive every acked offset of its room after its
first ``joined`` once, in offset order, through:

- a steady stream (no disturbance);
- ``kill -9`` of a primary, round after round on each shard, with
  ``--publish-replicas 1`` (the replica takes over; the killed node comes back as a
  replica before the next round);
- slot migrations of busy rooms to another primary (``CLUSTER SETSLOT`` and
  ``MIGRATE``) while traffic flows.

Messages answered ``unavailable`` may still be delivered (PROTOCOL.md); they are
counted, never required.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from conftest import Launcher, RedisClusterNodes, ServerProcess, connect, send_json
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
ROOMS_PER_SHARD = 2
LISTENERS_PER_ROOM = 6  # 36 listeners over 6 rooms
PUBLISH_EVERY = 0.06  # seconds between publishes of one publisher (12 publishers)
KILL_ROUNDS = 5
MIGRATIONS = 6


@dataclass
class Listener:
    room: str
    stays: bool = False  # never reconnects: only the live subscription feeds it
    start: str | None = None
    received: list[str] = field(default_factory=list)
    resumes: int = 0
    not_recovered: int = 0
    resyncs: int = 0
    unavailable: int = 0


@dataclass
class Traffic:
    """Acked offsets per room and what publishers saw."""

    acked: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # room -> [(sent at, acked at)] of each acked publish
    ack_times: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    unavailable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    not_replicated: int = 0  # `unavailable` after a failed WAIT (may still be delivered)


def rooms_on_every_shard(cluster: RedisClusterNodes) -> dict[int, list[str]]:
    """``ROOMS_PER_SHARD`` room names whose slot each primary (by port) owns."""
    by_primary: dict[int, list[str]] = {node["port"]: [] for node in cluster.primaries()}
    n = 0
    prefix = f"shard-{time.monotonic_ns() % 1_000_000}"
    while any(len(rooms) < ROOMS_PER_SHARD for rooms in by_primary.values()):
        room = f"{prefix}-{n}"
        n += 1
        owner = cluster.owner(cluster.keyslot(f"wsfleet:{{{room}}}"))["port"]
        if len(by_primary[owner]) < ROOMS_PER_SHARD:
            by_primary[owner].append(room)
    return by_primary


async def next_frame(connection: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await connection.recv())
        return frame


async def publisher(url: str, name: str, room: str, traffic: Traffic, stop: asyncio.Event) -> None:
    """A steady stream into one room; ``unavailable`` is counted and the next message sent."""
    connection, _ = await connect(url)
    n = 0
    while not stop.is_set():
        content = f"{name}-{n}"
        n += 1
        sent = time.monotonic()
        await send_json(
            connection, {"type": "message", "room": room, "content": content, "id": content}
        )
        frame = await next_frame(connection, timeout=30)
        if frame["type"] == "ack":
            traffic.acked[room].append(frame["offset"])
            traffic.ack_times[room].append((sent, time.monotonic()))
            await asyncio.sleep(PUBLISH_EVERY)
        else:
            assert frame["type"] == "error" and frame["code"] == "unavailable", frame
            traffic.unavailable[room] += 1
            traffic.not_replicated += "may still be delivered" in frame["message"]
            await asyncio.sleep(0.02)
    await connection.close()


async def join_room(
    connection: ClientConnection, listener: Listener, **extra: Any
) -> dict[str, Any]:
    while True:
        await send_json(connection, {"type": "join", "room": listener.room, **extra})
        frame = await next_frame(connection)
        if frame["type"] == "joined":
            return frame
        assert frame["type"] == "error" and frame["code"] == "unavailable", frame
        listener.unavailable += 1
        await asyncio.sleep(0.05)


async def listen(
    urls: list[str], listener: Listener, rng: random.Random, stop: asyncio.Event, turn: int
) -> None:
    """Join, read for a while, close, resume with ``since`` on the other instance; again."""
    epoch: str | None = None
    while not stop.is_set():
        connection, _ = await connect(urls[turn % 2])
        turn += 1
        since = listener.received[-1] if listener.received else listener.start
        if epoch is None:
            joined = await join_room(connection, listener)
            listener.start, epoch = joined["offset"], joined["epoch"]
        else:
            joined = await join_room(connection, listener, since=since, epoch=epoch)
            listener.resumes += 1
            if not joined["recovered"]:
                listener.not_recovered += 1
        deadline = time.monotonic() + (3600 if listener.stays else rng.uniform(0.5, 2.0))
        try:
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    frame = await next_frame(
                        connection, min(0.5, max(0.05, deadline - time.monotonic()))
                    )
                except TimeoutError:
                    continue
                if frame["type"] == "message":
                    listener.received.append(frame["offset"])
                elif frame["type"] == "joined":
                    listener.resyncs += 1  # history lost a gap: must never happen here
        except ConnectionClosed:
            pass
        finally:
            await connection.close()


async def catch_up(listener: Listener, last: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listener.received and offset_key(listener.received[-1]) >= offset_key(last):
            return
        await asyncio.sleep(0.05)


def check(listeners: list[Listener], traffic: Traffic) -> dict[str, int]:
    """Lost acked offsets, duplicates, out-of-order deliveries and resyncs over all listeners."""
    figures = {"lost": 0, "duplicates": 0, "out_of_order": 0, "resyncs": 0, "not_recovered": 0}
    figures["delivered"] = 0
    figures["stayers_lost"] = 0
    figures["unacked_delivered"] = 0
    for listener in listeners:
        received = listener.received
        figures["delivered"] += len(received)
        figures["duplicates"] += len(received) - len(set(received))
        figures["out_of_order"] += sum(
            1 for a, b in itertools.pairwise(received) if offset_key(b) <= offset_key(a)
        )
        start = offset_key(listener.start) if listener.start else (0, 0)
        acked = [o for o in traffic.acked[listener.room] if offset_key(o) > start]
        seen = set(received)
        lost = sum(1 for offset in acked if offset not in seen)
        figures["lost"] += lost
        if listener.stays:
            figures["stayers_lost"] += lost
        figures["unacked_delivered"] += len(seen - set(traffic.acked[listener.room]))
        figures["resyncs"] += listener.resyncs
        figures["not_recovered"] += listener.not_recovered
    return figures


@dataclass
class Run:
    servers: list[ServerProcess]
    rooms: dict[int, list[str]]  # primary port at the start -> rooms
    traffic: Traffic
    listeners: list[Listener]
    stop_publish: asyncio.Event
    stop_listen: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def failed(self) -> None:
        for task in self.tasks:
            if task.done():
                task.result()


async def start_traffic(launch: Launcher, cluster: RedisClusterNodes, *flags: str) -> Run:
    servers = [
        launch(*SERVER_FLAGS, *flags, redis=cluster),
        launch(*SERVER_FLAGS, *flags, redis=cluster),
    ]
    rooms = rooms_on_every_shard(cluster)
    all_rooms = [room for shard in rooms.values() for room in shard]
    traffic = Traffic()
    stop_publish, stop_listen = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(publisher(server.url, f"p{n}-{room}", room, traffic, stop_publish))
        for n, server in enumerate(servers)
        for room in all_rooms
    ]
    # Every room has a first message before listeners join: their start is an offset.
    deadline = time.monotonic() + 20
    while not all(traffic.acked[room] for room in all_rooms):
        assert time.monotonic() < deadline, "publishes never succeeded"
        await asyncio.sleep(0.05)
    rng = random.Random(13)
    # Per room and instance one listener that stays connected (it proves the live
    # subscription followed the room's shard), the others keep resuming.
    listeners = [
        Listener(room, stays=n < 2) for room in all_rooms for n in range(LISTENERS_PER_ROOM)
    ]
    urls = [server.url for server in servers]
    tasks += [
        asyncio.create_task(
            listen(urls, listener, random.Random(rng.random()), stop_listen, turn=n)
        )
        for n, listener in enumerate(listeners)
    ]
    return Run(servers, rooms, traffic, listeners, stop_publish, stop_listen, tasks)


async def finish_traffic(run: Run) -> dict[str, int]:
    run.stop_publish.set()
    publishers = run.tasks[: len(run.tasks) - len(run.listeners)]
    await asyncio.wait_for(asyncio.gather(*publishers), 40)
    for listener in run.listeners:
        if run.traffic.acked[listener.room]:
            await catch_up(listener, run.traffic.acked[listener.room][-1])
    run.stop_listen.set()
    await asyncio.wait_for(asyncio.gather(*run.tasks), 30)
    figures = check(run.listeners, run.traffic)
    figures["acked"] = sum(len(offsets) for offsets in run.traffic.acked.values())
    figures["unavailable_answers"] = sum(run.traffic.unavailable.values())
    figures["not_replicated_answers"] = run.traffic.not_replicated
    figures["resumes"] = sum(listener.resumes for listener in run.listeners)
    figures["listeners"] = len(run.listeners)
    return figures


async def flow(run: Run, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run.failed()
        await asyncio.sleep(0.1)


def assert_exact(figures: dict[str, int]) -> None:
    assert figures["lost"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["out_of_order"] == 0, figures
    assert figures["resyncs"] == 0, figures
    assert figures["not_recovered"] == 0, figures
    assert figures["resumes"] >= figures["listeners"], figures  # listeners did resume
    assert figures["stayers_lost"] == 0, figures


async def test_rooms_on_every_shard_deliver_every_acked_offset_once_in_order(
    launch: Launcher, redis_cluster: RedisClusterNodes
) -> None:
    run = await start_traffic(launch, redis_cluster)
    await flow(run, 8)
    for server in run.servers:
        assert server.json("/health")[1]["redis"] == "up"
        assert server.metric("ws_redis_up") == 1
    figures = await finish_traffic(run)
    print(f"\nsteady stream: {figures}")
    assert_exact(figures)
    assert figures["unavailable_answers"] == 0, figures
    # Each shard carried its rooms: every primary stored some of the messages.
    assert len(run.rooms) == 3


async def test_killed_primary_fails_over_without_losing_an_acked_message(
    launch: Launcher, redis_cluster: RedisClusterNodes
) -> None:
    run = await start_traffic(launch, redis_cluster, "--publish-replicas", "1")
    await flow(run, 2)
    shards = list(run.rooms.values())
    failovers, recoveries = [], []
    degraded: set[tuple[int, int]] = set()
    for round_number in range(KILL_ROUNDS):
        rooms = shards[round_number % len(shards)]
        slot = redis_cluster.keyslot(f"wsfleet:{{{rooms[0]}}}")
        victim = redis_cluster.owner(slot)["port"]
        killed_at = time.monotonic()
        redis_cluster.kill(victim)
        while redis_cluster.owner_or_none(slot) in (None, victim):
            run.failed()
            assert time.monotonic() - killed_at < 30, "the replica never took over"
            for server in run.servers:
                # /health and ws_redis_up say so while the shard has no primary.
                if server.json("/health")[0] == 503 and server.metric("ws_redis_up") == 0:
                    degraded.add((round_number, server.port))
            await asyncio.sleep(0.02)
        failovers.append(time.monotonic() - killed_at)
        # The shard's only replica is now its primary: WAIT 1 cannot succeed until the
        # killed node is back, as a replica of its successor.
        redis_cluster.start_node(victim)
        while True:
            run.failed()
            recovered = [
                acked_at
                for room in rooms
                for sent, acked_at in run.traffic.ack_times[room]
                if sent > killed_at
            ]
            if recovered:
                recoveries.append(min(recovered) - killed_at)
                break
            assert time.monotonic() - killed_at < 40, "publishes never recovered"
            await asyncio.sleep(0.02)
        redis_cluster.wait_ok()
        await flow(run, 2)
    for server in run.servers:
        server.wait_healthy()
        assert server.metric("ws_redis_up") == 1
    # Every round, some instance reported the outage (one may have had no room there).
    assert {n for n, _ in degraded} == set(range(KILL_ROUNDS)), degraded
    figures = await finish_traffic(run)
    print(
        f"\nkill -9 rounds: replica primary after {[round(s, 2) for s in failovers]} s, "
        f"publishes acked again after {[round(s, 2) for s in recoveries]} s "
        f"(killed node restarted at once); {figures}"
    )
    assert_exact(figures)
    assert figures["unavailable_answers"] > 0, figures  # publishers were told, not ignored


def migrate_slot(cluster: RedisClusterNodes, slot: int, target_port: int) -> None:
    """Move one slot with its keys to another primary (the redis-cli --cluster way)."""
    source = cluster.owner(slot)
    target = next(node for node in cluster.primaries() if node["port"] == target_port)
    with cluster.client(target["port"]) as dst, cluster.client(source["port"]) as src:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source["id"])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target["id"])
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target["port"], "", 0, 5000, "KEYS", *keys)
        for port in (target["port"], source["port"]):
            with cluster.client(port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target["id"])
    for node in cluster.primaries():
        with cluster.client(node["port"]) as other:
            other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target["id"])


async def test_slot_migration_of_busy_rooms_loses_and_duplicates_nothing(
    launch: Launcher, redis_cluster: RedisClusterNodes
) -> None:
    run = await start_traffic(launch, redis_cluster)
    await flow(run, 2)
    rooms = [shard[0] for shard in run.rooms.values()]
    moves = []
    for n in range(MIGRATIONS):
        room = rooms[n % len(rooms)]
        slot = redis_cluster.keyslot(f"wsfleet:{{{room}}}")
        source = redis_cluster.owner(slot)["port"]
        target = next(node["port"] for node in redis_cluster.primaries() if node["port"] != source)
        migrate_slot(redis_cluster, slot, target)
        wait_owner = time.monotonic() + 10
        while redis_cluster.owner(slot)["port"] != target:
            assert time.monotonic() < wait_owner
            await asyncio.sleep(0.05)
        moves.append((room, source, target))
        await flow(run, 2)
    figures = await finish_traffic(run)
    print(f"\nmigrations {moves}: {figures}")
    assert_exact(figures)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--redis-url", "redis://127.0.0.1:6379/0", "--redis-cluster", "127.0.0.1:7300"],
            "--redis-url (from --redis-url) and --redis-cluster (from --redis-cluster)",
        ),
        (
            ["--redis-cluster", "127.0.0.1:7300,nonsense"],
            "invalid value for --redis-cluster (from --redis-cluster): 'nonsense' is not host:port",
        ),
        (["--redis-cluster", "127.0.0.1:99999"], "invalid value for --redis-cluster"),
        (["--publish-replicas", "-1"], "invalid value for --publish-replicas"),
    ],
)
def test_bad_cluster_settings_stop_the_server_naming_the_setting(
    args: list[str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsfleet", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert expected in result.stderr, result.stderr
