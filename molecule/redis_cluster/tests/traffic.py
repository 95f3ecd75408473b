"""A steady stream through both server instances into rooms on every shard, and
the check that every listener got every acknowledged message once, in order.

- Publishers: one real :class:`wsfleet.client.Client` per room (rooms alternate
  between the two instances), a message every PUBLISH_INTERVAL. What the server
  acknowledged is the truth every listener is held to; an ``unavailable``
  answer, a timeout or a connection closed before the answer are counted, never
  owed (PROTOCOL.md: they may still be delivered).
- Staying listeners: per room one real ``Client`` on each instance, joined before
  the first message; the client reconnects and resumes by itself if the server
  closes the connection. ``Client`` drops repeated offsets itself, so the figure
  for them is its ``duplicates_dropped``; a ``RoomResync`` means history was lost.
- Hopping listeners: per room two raw protocol listeners that close their
  connection every 0.5-2 s and resume with ``since``/``epoch`` on the other
  instance: every repeat, gap or reorder on the wire shows in their offsets.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from conftest import WS_URLS
from redis_nodes import SLOTS, Node, cli_batch, cluster_nodes, owner
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsfleet.client import Client, Message, PublishError, RoomResync
from wsfleet.protocol import offset_key

PUBLISH_INTERVAL = 0.1  # per room: 12 rooms, about 120 messages a second
ROOMS_PER_SHARD = 4
HOPPERS_PER_ROOM = 2


def room_slot(room: str) -> int:
    """The hash slot of the room's keys and channel (all "wsfleet:{room}...")."""
    # Redis Cluster's CRC16 is CRC-CCITT (XMODEM), which binascii.crc_hqx computes.
    return binascii.crc_hqx(room.encode(), 0) % SLOTS


def rooms_on_every_shard(machine: Callable, tag: str) -> dict[str, list[str]]:
    """ROOMS_PER_SHARD rooms per primary, spread over each primary's slots (one in
    each quarter of its slots, so a rebalance that takes a share of them moves
    some busy rooms); keyed by the primary's name. Checked against CLUSTER KEYSLOT."""
    nodes = cluster_nodes(machine)
    primaries = [node for node in nodes if node.is_primary and node.slots]
    owned = {node.name: sorted(s for first, last in node.slots for s in range(first, last + 1)) for node in primaries}
    buckets: dict[tuple[str, int], str] = {}
    for n in itertools.count():
        room = f"{tag}-{n}"
        slot = room_slot(room)
        holder = owner(nodes, slot)
        assert holder is not None, f"slot {slot} has no primary"
        slots = owned[holder.name]
        quarter = slots.index(slot) * ROOMS_PER_SHARD // len(slots)
        buckets.setdefault((holder.name, quarter), room)
        if len(buckets) == len(primaries) * ROOMS_PER_SHARD:
            break
    rooms: dict[str, list[str]] = defaultdict(list)
    for (name, _), room in sorted(buckets.items()):
        rooms[name].append(room)
    check_slots(machine, [room for shard in rooms.values() for room in shard], primaries[0])
    return dict(rooms)


def check_slots(machine: Callable, rooms: list[str], node: Node) -> None:
    replies = cli_batch(machine, node.host, node.port, [f"CLUSTER KEYSLOT wsfleet:{{{room}}}" for room in rooms])
    assert [int(reply) for reply in replies] == [room_slot(room) for room in rooms], replies


@dataclass
class Listener:
    room: str
    kind: str  # "client" (stays, wsfleet.client.Client) or "hopper" (raw, resumes)
    start: str | None = None  # a hopper's first joined offset; clients join before any message
    received: list[str] = field(default_factory=list)
    resumes: int = 0
    not_recovered: int = 0
    resyncs: int = 0
    duplicates_dropped: int = 0  # by the Client itself
    refused_joins: int = 0


@dataclass
class Publishes:
    acked: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # room -> (sent at, acked at) of each acknowledged publish
    ack_times: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    unavailable: int = 0
    not_replicated: int = 0  # `unavailable` because WAIT found no replica in time
    timed_out: int = 0
    interrupted: int = 0  # the connection closed before the answer

    def first_ack_after(self, rooms: list[str], moment: float) -> float | None:
        times = [acked for room in rooms for sent, acked in self.ack_times[room] if sent > moment]
        return min(times) if times else None


async def publish_steadily(url: str, room: str, publishes: Publishes, stop: asyncio.Event) -> None:
    async with Client(url) as client:
        await client.wait_connected(timeout=30)
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                offset = await client.publish(room, {"n": n}, timeout=15)
            except PublishError as error:
                assert error.code == "unavailable", error
                publishes.unavailable += 1
                publishes.not_replicated += "may still be delivered" in str(error)
            except TimeoutError:
                publishes.timed_out += 1
            except ConnectionClosed:
                publishes.interrupted += 1
            else:
                publishes.acked[room].append(offset)
                publishes.ack_times[room].append((sent, time.monotonic()))
            await asyncio.sleep(PUBLISH_INTERVAL)


async def listen_with_client(url: str, listener: Listener, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with Client(url, rooms=[listener.room]) as client:
        await client.wait_connected(timeout=30)
        ready.set()

        async def read() -> None:
            async for event in client:
                if isinstance(event, Message):
                    listener.received.append(event.offset)
                elif isinstance(event, RoomResync):
                    listener.resyncs += 1

        reading = asyncio.create_task(read())
        await stop.wait()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        listener.duplicates_dropped = client.stats.duplicates_dropped
        listener.resumes = client.stats.connects - 1


async def next_frame(connection: ClientConnection, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await connection.recv())
        return frame


async def hop(listener: Listener, rng: random.Random, stop: asyncio.Event, turn: int) -> None:
    """Join, read 0.5-2 s, close, resume with since/epoch on the other instance."""
    epoch: str | None = None
    while not stop.is_set():
        url = WS_URLS[turn % len(WS_URLS)]
        turn += 1
        try:
            connection = await websockets.connect(url, compression=None, open_timeout=5)
        except (OSError, InvalidStatus, TimeoutError):
            await asyncio.sleep(0.2)  # this instance is restarting: the next one
            continue
        try:
            since = listener.received[-1] if listener.received else listener.start
            join: dict[str, Any] = {"type": "join", "room": listener.room}
            if epoch is not None:
                join.update(since=since, epoch=epoch)
            deadline = time.monotonic() + rng.uniform(0.5, 2.0)
            await connection.send(json.dumps(join))
            joined = False
            while not stop.is_set() and (not joined or time.monotonic() < deadline):
                try:
                    frame = await next_frame(connection, 0.5)
                except TimeoutError:
                    continue
                kind = frame["type"]
                if kind == "joined":
                    if joined:
                        listener.resyncs += 1  # the server lost a gap: must never happen
                    elif epoch is None:
                        listener.start, epoch = frame["offset"], frame["epoch"]
                    else:
                        listener.resumes += 1
                        listener.not_recovered += not frame["recovered"]
                    joined = True
                elif kind == "message" and frame["room"] == listener.room:
                    listener.received.append(frame["offset"])
                elif kind == "error" and frame.get("code") == "unavailable" and not joined:
                    listener.refused_joins += 1
                    await asyncio.sleep(0.2)
                    await connection.send(json.dumps(join))
                elif kind == "error":
                    raise AssertionError(f"{listener.room}: {frame}")
        except ConnectionClosed:
            pass  # a draining instance closed it: resume on the other one
        finally:
            await connection.close()


@dataclass
class Stream:
    rooms: dict[str, list[str]]  # primary name at the start -> its rooms
    publishes: Publishes = field(default_factory=Publishes)
    listeners: list[Listener] = field(default_factory=list)
    stop_publishing: asyncio.Event = field(default_factory=asyncio.Event)
    stop_listening: asyncio.Event = field(default_factory=asyncio.Event)
    publishers: list[asyncio.Task[None]] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def all_rooms(self) -> list[str]:
        return [room for shard in self.rooms.values() for room in shard]

    async def start(self) -> None:
        rooms = self.all_rooms
        # Staying clients first, joined on empty rooms: every acked message is theirs.
        for index, room in enumerate(rooms):
            for url in WS_URLS:
                listener = Listener(room, "client")
                self.listeners.append(listener)
                ready = asyncio.Event()
                self.readers.append(asyncio.create_task(listen_with_client(url, listener, ready, self.stop_listening)))
                await ready.wait()
            url = WS_URLS[index % len(WS_URLS)]
            self.publishers.append(asyncio.create_task(publish_steadily(url, room, self.publishes, self.stop_publishing)))
        # Hoppers once every room has a first message: their start is an offset.
        deadline = time.monotonic() + 30
        while not all(self.publishes.acked[room] for room in rooms):
            self.raise_failures()
            assert time.monotonic() < deadline, "publishes never succeeded"
            await asyncio.sleep(0.1)
        rng = random.Random(13)
        for room in rooms:
            for n in range(HOPPERS_PER_ROOM):
                listener = Listener(room, "hopper")
                self.listeners.append(listener)
                self.readers.append(asyncio.create_task(hop(listener, random.Random(rng.random()), self.stop_listening, n)))

    def raise_failures(self) -> None:
        for task in self.publishers + self.readers:
            if task.done():
                task.result()

    async def flow(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.raise_failures()
            await asyncio.sleep(0.1)

    async def finish(self) -> dict[str, int]:
        self.raise_failures()
        self.stop_publishing.set()
        await asyncio.wait_for(asyncio.gather(*self.publishers), 60)
        deadline = time.monotonic() + 30
        for listener in self.listeners:
            last = self.publishes.acked[listener.room][-1]
            while offset_key(listener.received[-1] if listener.received else "0-0") < offset_key(last):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        self.stop_listening.set()
        await asyncio.wait_for(asyncio.gather(*self.readers), 30)
        return self.figures()

    async def abort(self) -> None:
        self.stop_publishing.set()
        self.stop_listening.set()
        for task in self.publishers + self.readers:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self.publishers, *self.readers, return_exceptions=True)

    def figures(self) -> dict[str, int]:
        publishes = self.publishes
        figures = {
            "rooms": len(self.all_rooms),
            "listeners": len(self.listeners),
            "acked": sum(len(offsets) for offsets in publishes.acked.values()),
            "unavailable": publishes.unavailable,
            "not_replicated": publishes.not_replicated,
            "timed_out": publishes.timed_out,
            "interrupted": publishes.interrupted,
            "delivered": 0,
            "lost": 0,
            "duplicates": 0,
            "duplicates_dropped_by_client": 0,
            "out_of_order": 0,
            "resyncs": 0,
            "not_recovered": 0,
            "resumes": 0,
            "unacked_delivered": 0,
        }
        for listener in self.listeners:
            received = listener.received
            start = offset_key(listener.start) if listener.start else (0, 0)
            owed = [offset for offset in publishes.acked[listener.room] if offset_key(offset) > start]
            seen = set(received)
            figures["delivered"] += len(received)
            figures["lost"] += sum(1 for offset in owed if offset not in seen)
            figures["duplicates"] += len(received) - len(seen)
            figures["duplicates_dropped_by_client"] += listener.duplicates_dropped
            figures["out_of_order"] += sum(1 for a, b in itertools.pairwise(received) if offset_key(b) <= offset_key(a))
            figures["resyncs"] += listener.resyncs
            figures["not_recovered"] += listener.not_recovered
            figures["resumes"] += listener.resumes
            figures["unacked_delivered"] += len(seen - set(publishes.acked[listener.room]))
        return figures


def assert_exact(figures: dict[str, int]) -> None:
    """0 acked messages lost, 0 repeated, 0 reordered, no history gap, on every listener."""
    for name in ("lost", "duplicates", "out_of_order", "resyncs", "not_recovered"):
        assert figures[name] == 0, f"{name}: {figures}"
    assert figures["acked"] > 0, figures
    assert figures["resumes"] >= figures["rooms"] * HOPPERS_PER_ROOM, figures  # hoppers did resume
