"""Local room membership and fanout, each offset to each member once and in order.

The hub knows which local connections are in which room. The broker's subscriber
task calls :meth:`Hub.deliver` for every message of a local room; delivery hands
the same encoded bytes to every member (encode once per instance) and never
awaits. A room is subscribed in Redis while it has at least one local member
(joined or joining) and unsubscribed when the last one leaves.

Delivery watermark (PROTOCOL.md: after ``joined``, a member receives each offset
after its starting point once, in offset order):

- Each room keeps ``watermark``, the newest offset handed to its live stream.
  :meth:`deliver` drops any offset at or below it, so a message that arrives twice
  (a gap fill from history overlapping what the subscriber connection still held,
  a resubscription) or late reaches nobody twice or out of order.
- A member's starting point is its ``joined.offset`` or the last replayed offset.
  While a member is ahead of the room's watermark (it read history newer than
  what the subscriber has relayed yet) it waits in ``ahead`` with its position and
  gets only offsets above it; once the live stream passes its position it joins
  the plain ``members`` set, where fanout needs no comparison.
- Joining: the connection waits in ``joining``, where live messages are buffered
  for it, while the room is subscribed and its history read; a PING on the
  subscriber connection (a barrier) then lets every message published before the
  read arrive. It receives ``joined``, the replay and the buffered messages above
  its position, in that order, and goes live, with no ``await`` in between.
- After a subscriber reconnect the broker fills each room's gap from history after
  :meth:`resume_point` (the watermark) through :meth:`deliver` itself, so the
  same rule filters it; when history no longer holds the watermark, members get
  ``joined`` again with ``recovered: false`` (:meth:`resync`). On a Redis Cluster
  the same fill follows every re-subscription of a room (a failover, a slot move;
  see :mod:`wsfleet.cluster_broker`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from wsfleet.broker import Broker, BrokerUnavailable
from wsfleet.connection import FleetConnection, text_frame
from wsfleet.logs import log_event
from wsfleet.metrics import Metrics
from wsfleet.protocol import encode, offset_key

__all__ = ["Hub", "Room"]

logger = logging.getLogger("wsfleet.hub")


OffsetKey = tuple[int, int]

# How long a joiner waits for the subscriber barrier. The watermark keeps delivery
# exact without it; the barrier only lets the joiner go live as a plain member.
BARRIER_TIMEOUT = 1.0


@dataclass(slots=True, eq=False)
class Room:
    """One room with local members."""

    name: str
    members: set[FleetConnection] = field(default_factory=set)
    # Members whose starting point is above the watermark, with that point.
    ahead: dict[FleetConnection, OffsetKey] = field(default_factory=dict)
    joining: dict[FleetConnection, list[tuple[OffsetKey, bytes]]] = field(default_factory=dict)
    subscribed: asyncio.Future[None] | None = None
    watermark: OffsetKey | None = None  # newest offset handed to the live stream
    watermark_offset: str | None = None  # the same, as the offset string


class Hub:
    """Rooms of this instance; the broker's delivery target."""

    def __init__(self, metrics: Metrics) -> None:
        self.rooms: dict[str, Room] = {}
        self.metrics = metrics
        self._broker: Broker | None = None
        self._outbound_message = metrics.outbound["message"]
        self._outbound_joined = metrics.outbound["joined"]
        self._fanout_latency = metrics.fanout_latency
        self._release_tasks: set[asyncio.Task[None]] = set()

    def attach(self, broker: Broker) -> None:
        self._broker = broker

    @property
    def broker(self) -> Broker:
        assert self._broker is not None, "attach() a broker first"
        return self._broker

    # Delivery (called by the broker's subscriber task)

    def deliver(self, room: str, offset: str, frame: bytes) -> None:
        """Relay one message to every local member of its room, once. Hot path."""
        local = self.rooms.get(room)
        if local is None:
            return
        key = offset_key(offset)
        watermark = local.watermark
        if watermark is not None and key <= watermark:
            return  # delivered already (or older than what was delivered): never twice
        local.watermark = key
        local.watermark_offset = offset
        members = local.members
        sent = len(members)
        if members:
            wire = text_frame(frame)  # framed once for every member
            for connection in members:
                connection.send_framed(frame, wire)
        if local.ahead:
            for connection, position in list(local.ahead.items()):
                if key < position:
                    continue
                if key > position:
                    connection.send_frame(frame)
                    sent += 1
                # The live stream has reached its position: a plain member from now on.
                del local.ahead[connection]
                members.add(connection)
        for buffered in local.joining.values():
            buffered.append((key, frame))
        if sent:
            self._outbound_message.inc(sent)
        # The offset's first part is the Redis time of the publish, in milliseconds.
        self._fanout_latency.observe(max(0.0, time.time() - key[0] / 1000))

    def resume_point(self, room: str) -> tuple[bool, str | None]:
        """Where a gap fill starts: ``(known, offset)``; offset None means from the start.

        ``known`` is True when the offset is the room's watermark, i.e. every member
        has everything up to it, so that history must still hold it for the fill to
        be complete.
        """
        local = self.rooms.get(room)
        if local is None:
            return False, None
        if local.watermark_offset is not None:
            return True, local.watermark_offset
        if local.ahead and not local.members and not local.joining:
            lowest = min(local.ahead.values())
            return False, f"{lowest[0]}-{lowest[1]}"
        return False, None

    def resync(self, room: str, latest: str | None, epoch: str | None) -> None:
        """History lost what members missed: tell each one with ``joined``, not recovered.

        PROTOCOL.md: a message the server cannot deliver in order is never skipped
        silently. The members stay members and continue after ``latest``.
        """
        local = self.rooms.get(room)
        if local is None:
            return
        frame = encode(
            {
                "type": "joined",
                "room": room,
                "offset": latest,
                "epoch": epoch,
                "recovered": False,
                "replayed": 0,
            }
        )
        for connection in (*local.members, *local.ahead):
            connection.send_frame(frame)
            self._outbound_joined.inc()
        local.members.update(local.ahead)
        local.ahead.clear()
        if latest is not None:
            local.watermark = offset_key(latest)
            local.watermark_offset = latest
        log_event(logger, logging.WARNING, "history lost a gap: members resynced", room=room)

    def local_rooms(self) -> list[str]:
        return list(self.rooms)

    def is_local(self, room: str) -> bool:
        return room in self.rooms

    # Membership

    async def join(
        self, connection: FleetConnection, room: str, since: str | None, epoch: str | None
    ) -> None:
        """Make ``connection`` a member; send ``joined``, replay, then go live.

        Raises :class:`BrokerUnavailable` (the connection is then not a member).
        """
        local = self.rooms.get(room)
        if local is None:
            local = self.rooms[room] = Room(room)
            local.subscribed = asyncio.ensure_future(self.broker.subscribe(room))
            self.metrics.local_rooms.set(len(self.rooms))
        assert local.subscribed is not None
        buffered: list[tuple[OffsetKey, bytes]] = []
        local.joining[connection] = buffered
        # A second join of the same room starts over (the client asked for a replay);
        # the connection stays in `joining` meanwhile, so the room is not released.
        local.members.discard(connection)
        local.ahead.pop(connection, None)
        try:
            # shield: one joiner giving up must not cancel the room's subscription.
            await asyncio.shield(local.subscribed)
            state = await self.broker.join_state(room, since, epoch)
            # Everything published before the read is relayed before this returns.
            await self.broker.barrier(BARRIER_TIMEOUT)
        except BaseException:
            if local.joining.get(connection) is buffered:
                del local.joining[connection]
            self._release_if_empty(local)
            raise
        if local.joining.get(connection) is not buffered:
            return  # a newer join of the same room by this connection took over
        del local.joining[connection]

        # From here to the end nothing awaits: no message can slip in between.
        position = offset_key(state.latest) if state.latest is not None else None
        if state.recovered and state.entries:
            position = offset_key(state.entries[-1][0])
        elif state.recovered and since is not None:
            position = offset_key(since)

        connection.send_frame(
            encode(
                {
                    "type": "joined",
                    "room": room,
                    "offset": state.latest,
                    "epoch": state.epoch,
                    "recovered": state.recovered,
                    "replayed": len(state.entries) if state.recovered else 0,
                }
            )
        )
        self._outbound_joined.inc()
        if state.recovered:
            for _offset, frame in state.entries:
                connection.send_frame(frame)
            if state.entries:
                self._outbound_message.inc(len(state.entries))
        for key, frame in buffered:
            if position is None or key > position:
                connection.send_frame(frame)
                self._outbound_message.inc()
                position = key
        watermark = local.watermark
        if position is None or (watermark is not None and watermark >= position):
            local.members.add(connection)
        else:
            local.ahead[connection] = position
        connection.add_room(room)

    def leave(self, connection: FleetConnection, room: str) -> bool:
        """Remove ``connection`` from ``room``; False if it was not a member."""
        connection.discard_room(room)
        local = self.rooms.get(room)
        if local is None:
            return False
        if connection in local.members:
            local.members.discard(connection)
        elif local.ahead.pop(connection, None) is None:
            return False
        self._release_if_empty(local)
        return True

    def leave_all(self, connection: FleetConnection) -> None:
        """Forget a closed connection everywhere (also a join it left unfinished)."""
        for room in list(connection.rooms):
            self.leave(connection, room)

    def _release_if_empty(self, local: Room) -> None:
        if local.members or local.ahead or local.joining or self.rooms.get(local.name) is not local:
            return
        del self.rooms[local.name]
        self.metrics.local_rooms.set(len(self.rooms))
        task = asyncio.get_running_loop().create_task(self._unsubscribe_after(local))
        self._release_tasks.add(task)
        task.add_done_callback(self._release_tasks.discard)

    async def _unsubscribe_after(self, local: Room) -> None:
        if local.subscribed is not None:
            try:
                await local.subscribed
            except (BrokerUnavailable, asyncio.CancelledError):
                return  # never subscribed: nothing to undo
        await self.broker.unsubscribe(local.name)

    @property
    def member_count(self) -> int:
        return sum(len(room.members) + len(room.ahead) for room in self.rooms.values())
