"""Local room membership and fanout.

The hub knows which local connections are in which room. The broker's subscriber
task calls :meth:`Hub.deliver` for every message of a local room; delivery hands
the same encoded bytes to every member (encode once per instance) and never
awaits. A room is subscribed in Redis while it has at least one local member
(joined or joining) and unsubscribed when the last one leaves.

Joining with resume: the connection first waits in ``joining``, where live messages
are buffered for it, while the room is subscribed and its history read. Then it
receives ``joined``, the replayed messages, and the buffered live messages whose
offsets come after what it already has, in that order, and becomes a member. So
the switch from replay to live has no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from wsfleet.broker import BrokerUnavailable, RedisBroker
from wsfleet.connection import FleetConnection, text_frame
from wsfleet.metrics import Metrics
from wsfleet.protocol import compare_offsets, encode

__all__ = ["Hub", "Room"]

logger = logging.getLogger("wsfleet.hub")


@dataclass(slots=True, eq=False)
class Room:
    """One room with local members."""

    name: str
    members: set[FleetConnection] = field(default_factory=set)
    joining: dict[FleetConnection, list[tuple[str, bytes]]] = field(default_factory=dict)
    subscribed: asyncio.Future[None] | None = None
    last_delivered: str | None = None  # newest offset relayed live
    known_latest: str | None = None  # newest offset seen by a join's history read


class Hub:
    """Rooms of this instance; the broker's delivery target."""

    def __init__(self, metrics: Metrics) -> None:
        self.rooms: dict[str, Room] = {}
        self.metrics = metrics
        self._broker: RedisBroker | None = None
        self._outbound_message = metrics.outbound["message"]
        self._outbound_joined = metrics.outbound["joined"]
        self._fanout_latency = metrics.fanout_latency
        self._release_tasks: set[asyncio.Task[None]] = set()

    def attach(self, broker: RedisBroker) -> None:
        self._broker = broker

    @property
    def broker(self) -> RedisBroker:
        assert self._broker is not None, "attach() a broker first"
        return self._broker

    # Delivery (called by the broker's subscriber task)

    def deliver(self, room: str, offset: str, frame: bytes) -> None:
        """Relay one message to every local member of its room. Hot path."""
        local = self.rooms.get(room)
        if local is None:
            return
        local.last_delivered = offset
        members = local.members
        if members:
            wire = text_frame(frame)  # framed once for every member
            for connection in members:
                connection.send_framed(frame, wire)
        for buffered in local.joining.values():
            buffered.append((offset, frame))
        if members:
            self._outbound_message.inc(len(members))
        # The offset's first part is the Redis time of the publish, in milliseconds.
        published_ms = int(offset.partition("-")[0])
        self._fanout_latency.observe(max(0.0, time.time() - published_ms / 1000))

    def resume_point(self, room: str) -> str | None:
        """The newest offset local members are known to have (for gap filling)."""
        local = self.rooms.get(room)
        if local is None:
            return None
        candidates = [o for o in (local.last_delivered, local.known_latest) if o is not None]
        if not candidates:
            return None
        newest = candidates[0]
        for offset in candidates[1:]:
            if compare_offsets(offset, newest) > 0:
                newest = offset
        return newest

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
        buffered: list[tuple[str, bytes]] = []
        local.joining[connection] = buffered
        # A second join of the same room starts over (the client asked for a replay);
        # the connection stays in `joining` meanwhile, so the room is not released.
        local.members.discard(connection)
        try:
            # shield: one joiner giving up must not cancel the room's subscription.
            await asyncio.shield(local.subscribed)
            state = await self.broker.join_state(room, since, epoch)
        except BaseException:
            local.joining.pop(connection, None)
            self._release_if_empty(local)
            raise
        local.joining.pop(connection, None)

        if state.latest is not None and (
            local.known_latest is None or compare_offsets(state.latest, local.known_latest) > 0
        ):
            local.known_latest = state.latest
        position = state.latest
        if state.recovered and state.entries:
            position = state.entries[-1][0]
        elif state.recovered and since is not None:
            position = since

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
        for offset, frame in buffered:
            if position is None or compare_offsets(offset, position) > 0:
                connection.send_frame(frame)
                self._outbound_message.inc()
        local.members.add(connection)
        connection.add_room(room)

    def leave(self, connection: FleetConnection, room: str) -> bool:
        """Remove ``connection`` from ``room``; False if it was not a member."""
        connection.discard_room(room)
        local = self.rooms.get(room)
        if local is None or connection not in local.members:
            return False
        local.members.discard(connection)
        self._release_if_empty(local)
        return True

    def leave_all(self, connection: FleetConnection) -> None:
        """Forget a closed connection everywhere."""
        for room in list(connection.rooms):
            self.leave(connection, room)

    def _release_if_empty(self, local: Room) -> None:
        if local.members or local.joining or self.rooms.get(local.name) is not local:
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
        return sum(len(room.members) for room in self.rooms.values())
