"""Redis Cluster side of the server: sharded pub/sub that follows failovers and slot moves.

redis-py's :class:`~redis.asyncio.cluster.RedisCluster` routes every command to the
primary that owns its slot, follows ``MOVED``/``ASK`` and refreshes its slot map
after a connection error. A room's stream, epoch and token keys and its channel
share one hash slot (``{room}``), so the publish script still runs as one
``EVALSHA`` on that primary, with ``SPUBLISH`` instead of ``PUBLISH``.

Subscriptions go through one :class:`~redis.asyncio.cluster.ClusterPubSub`
(``ssubscribe``), which keeps one connection per primary. One reader task per
primary reads it with ``get_sharded_message(target_node=...)`` and hands every
message to the hub at once, never awaiting a client.

Delivery stays exact (no duplicate, no gap, in order) through the hub's watermark
(:mod:`wsfleet.hub`) and one rule: every ``ssubscribe`` confirmation this instance
did not ask for is a re-subscription (a reconnect, a failover, a slot move; redis-py
re-subscribes on its own), and the room's gap is then filled from its history after
the watermark, while its live messages wait in a buffer, exactly as the single-Redis
broker does after a reconnect. A room whose subscription is gone (its primary's
connection failed, or Redis sent ``sunsubscribe`` because the slot moved) is
re-subscribed by the healer: a keyed read drives redis-py's slot map to the new
owner, then ``ssubscribe`` moves the subscription there.

``up`` (``/health`` and ``ws_redis_up``) is True while every primary of the slot map
answers PING and every subscribed room's subscription is confirmed on the primary
that owns its slot; it is False from the loss of a primary until its replica has
taken over and the rooms are subscribed there. Publishes and joins are not gated
on it: a room whose shard is up keeps working while another shard fails over.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from wsfleet.broker import (
    PUBLISH_ATTEMPTS,
    BrokerUnavailable,
    Delivery,
    JoinState,
    NotReplicated,
    channel_name,
    fill_gap,
    history_key,
    jittered_backoff,
    join_call,
    join_state_of,
    load_script,
    publish_call,
    room_of_channel,
    stored_frames,
)
from wsfleet.logs import log_event

__all__ = ["ClusterBroker"]

logger = logging.getLogger("wsfleet.cluster_broker")

# How long one read of a primary's connection waits for a message before it looks
# at the topology again.
READ_TIMEOUT = 1.0
# A reader whose primary has no subscription yet looks again after this long.
IDLE_POLL = 0.05
# How long a subscribe waits for Redis to confirm it.
SUBSCRIBE_TIMEOUT = 5.0
# Commands in flight at once. redis-py's cluster pools refuse past max_connections
# per node (MaxConnectionsError) instead of waiting, and the subscriber connections
# come from the same pools: a burst of publishes or gap fills waits here instead.
MAX_IN_FLIGHT = 100
# How soon a burst of subscription changes is summed up into `up` (one pass over
# the rooms per burst, not one per confirmation).
STATE_CHECK_DELAY = 0.05
# Tries of one publish with WAIT across redirections and failovers.
REPLICATED_ATTEMPTS = 4
# Errors that mean "the slot is elsewhere or moving": settle it without WAIT, then retry.
REDIRECTIONS = (MovedError, AskError, TryAgainError, ClusterDownError)
# What a Redis call may raise when a node goes away: RedisError, RedisClusterException
# (no node for a slot), OSError, RuntimeError (uvloop: a write to a closed transport),
# and, when a topology refresh closes a connection that another command is opening,
# AttributeError from inside redis-py. All mean "unavailable, retry".
OS_ERRORS = (Exception,)


class ClusterBroker:
    """Store, publish and subscribe through a Redis Cluster; track whether it is usable."""

    def __init__(
        self,
        nodes: tuple[tuple[str, int], ...],
        *,
        username: str | None,
        password: str | None,
        history_size: int,
        history_ttl: float,
        delivery: Delivery,
        publish_replicas: int = 0,
        publish_replicas_timeout: float = 1.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
        on_state_change: Any = None,
    ) -> None:
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            username=username,
            password=password,
            # A shard that fails over must not stop the client from serving the others.
            require_full_coverage=False,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            socket_keepalive=True,
            max_connections=MAX_IN_FLIGHT + 28,
            # No retry inside redis-py: its retries close every node's connections
            # (subscriber ones included) before each new try, which during one
            # shard's failover kept resetting the healthy shards' subscriptions.
            # A failed command answers `unavailable` at once; the next one (or the
            # probe) refreshes the slot map.
            retry=Retry(NoBackoff(), 0),
            # A MOVED patches the slot map for that slot only: a full refresh (every
            # 5th MOVED by default) would close every connection in the same way.
            reinitialize_steps=0,
        )
        self._pubsub = self._cluster.pubsub()
        publish_source, join_source = load_script("publish.lua"), load_script("join.lua")
        self._publish_source = publish_source
        self._publish_script = self._cluster.register_script(publish_source)
        self._join_script = self._cluster.register_script(join_source)
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000)
        self._history_enabled = history_size > 0 and self._history_ttl_ms > 0
        self._delivery = delivery
        self._publish_replicas = publish_replicas
        self._wait_timeout_ms = max(1, round(publish_replicas_timeout * 1000))
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._on_state_change = on_state_change

        self._command_lock = asyncio.Lock()
        self._confirmations: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._subscribed: set[str] = set()  # rooms this instance asked for, confirmed once
        self._live: dict[str, str] = {}  # room -> name of the node that confirmed it
        self._filling: dict[str, list[tuple[str, bytes]]] = {}  # room -> held-back messages
        self._fills: dict[str, asyncio.Task[None]] = {}
        self._refill: set[str] = set()
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._nodes_down: set[str] = set()  # nodes whose loss was logged
        self._heal_wanted = asyncio.Event()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._state_check: asyncio.TimerHandle | None = None
        self._probe_ok = False
        self._was_up = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # State

    @property
    def up(self) -> bool:
        """True when every primary answers and every subscribed room is live on its owner."""
        return self._probe_ok and not self._lost_rooms()

    def _lost_rooms(self) -> list[str]:
        lost = []
        for room in self._subscribed:
            try:
                owner = self._cluster.get_node_from_key(history_key(room))  # the channel's slot
            except (RedisError, RedisClusterException):  # no slot map, or the slot uncovered
                lost.append(room)
                continue
            if owner is None or self._live.get(room) != owner.name:
                lost.append(room)
        return lost

    def _state_changed(self) -> None:
        up = self.up
        if up != self._was_up:
            self._was_up = up
            log_event(
                logger,
                logging.INFO if up else logging.WARNING,
                "redis cluster up" if up else "redis cluster degraded",
                event="redis_up" if up else "redis_down",
            )
            if self._on_state_change is not None:
                self._on_state_change(up)

    def _schedule_state_check(self) -> None:
        """Sum up a burst of subscription changes into `up` once, a moment later."""
        if self._state_check is None and not self._closing:
            self._state_check = asyncio.get_running_loop().call_later(
                STATE_CHECK_DELAY, self._run_state_check
            )

    def _run_state_check(self) -> None:
        self._state_check = None
        self._state_changed()

    async def start(self) -> None:
        """Start the probe and the healer; returns at once (the cluster may be down)."""
        self._tasks = [
            asyncio.create_task(self._run_probe(), name="redis-cluster-probe"),
            asyncio.create_task(self._run_healer(), name="redis-cluster-healer"),
        ]

    async def close(self) -> None:
        """Stop every task and close every connection."""
        self._closing = True
        if self._state_check is not None:
            self._state_check.cancel()
        tasks = [*self._tasks, *self._readers.values(), *self._fills.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_waiters(BrokerUnavailable("broker closed"))
        with contextlib.suppress(Exception):  # closing: whatever state it is in
            await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self._cluster.aclose()
        self._probe_ok = False
        self._state_changed()

    # Commands

    async def publish(self, room: str, sender_json: bytes, content_json: bytes) -> str:
        """Store a message in the room's history and publish it on its shard; return its offset.

        Not gated on :attr:`up`: a room whose shard answers is served while another
        shard fails over. Raises :class:`BrokerUnavailable` when the room's primary
        does not answer, :class:`NotReplicated` when WAIT confirms too few replicas.
        """
        keys, args = publish_call(
            room,
            sender_json,
            content_json,
            self._history_size,
            self._history_ttl_ms,
            command="SPUBLISH",
        )
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                async with self._in_flight:
                    if self._publish_replicas:
                        offset = await self._publish_and_wait(keys, args)
                    else:
                        # RedisCluster follows redirections; the script's token makes
                        # a retry return the first run's offset.
                        offset = await self._publish_script(keys=keys, args=args)
            except BrokerUnavailable:
                raise  # NotReplicated: stored, published, not confirmed; say so as it is
            except RedisConnectionError as exc:
                # A pooled connection that broke (or a lost reply): once more, on a
                # fresh connection and slot map.
                if attempt + 1 == PUBLISH_ATTEMPTS:
                    raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
                continue
            except OS_ERRORS as exc:
                raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
            return offset.decode() if isinstance(offset, bytes) else str(offset)
        raise AssertionError("unreachable")

    async def _publish_and_wait(self, keys: list[str], args: list[bytes | str | int]) -> Any:
        """The publish script and WAIT in one pipeline on the slot's primary.

        WAIT only covers writes made on its own connection, so both go to the node
        the slot map names, without redirections. When the slot is elsewhere or
        moving, the script alone is run through the cluster client (which follows
        the redirection and updates its slot map), then the pair again: the token
        makes that second run a write that returns the first offset, so its WAIT
        still covers the message.
        """
        key = keys[0]
        for _attempt in range(REPLICATED_ATTEMPTS):
            try:
                node = self._cluster.get_node_from_key(key)
            except (RedisError, RedisClusterException):
                node = None
            if node is None:
                # No slot map (dropped after a connection error) or the slot is not
                # covered: the script alone lets the client find the owner.
                await self._publish_script(keys=keys, args=args)
                continue
            pipe = self._cluster.pipeline()
            # (ClusterPipeline blocks its evalsha() helper; the raw command is routed
            # by its first key like any keyed command.)
            pipe.execute_command("EVALSHA", self._publish_script.sha, len(keys), *keys, *args)
            pipe.execute_command(
                "WAIT", self._publish_replicas, self._wait_timeout_ms, target_nodes=node
            )
            results = await pipe.execute(raise_on_error=False, allow_redirections=False)
            offset, replicas = results
            if isinstance(offset, NoScriptError):
                await self._cluster.script_load(self._publish_source)
                continue
            if isinstance(offset, REDIRECTIONS):
                await self._publish_script(keys=keys, args=args)
                continue
            if isinstance(offset, Exception):
                raise offset
            if isinstance(replicas, Exception):
                raise replicas
            try:
                owner = self._cluster.get_node_from_key(key)
            except (RedisError, RedisClusterException):
                owner = None
            if owner is None or owner.name != node.name:
                continue  # the slot map changed meanwhile: WAIT may have gone elsewhere
            if int(replicas) < self._publish_replicas:
                raise NotReplicated(
                    f"WAIT confirmed {replicas} of {self._publish_replicas} replicas"
                )
            return offset
        raise BrokerUnavailable("the room's slot kept moving")

    async def join_state(self, room: str, since: str | None, epoch: str | None) -> JoinState:
        """Epoch, latest offset and (when resumable) the messages after ``since``."""
        if not self._history_enabled:
            return JoinState(epoch=None, latest=None, recovered=False)
        keys, args = join_call(room, since, epoch, self._history_ttl_ms, self._history_size)
        try:
            async with self._in_flight:
                reply = await self._join_script(keys=keys, args=args)
        except OS_ERRORS as exc:
            raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
        return join_state_of(room, reply)

    async def history_after(self, room: str, after: str | None) -> list[tuple[str, bytes]]:
        """Stored messages with offsets after ``after`` (all of them when None)."""
        start = "-" if after is None else "(" + after
        async with self._in_flight:
            entries: Any = await self._cluster.xrange(
                history_key(room), start, "+", self._history_size
            )
        return stored_frames(room, entries or [])

    # Subscriptions

    async def subscribe(self, room: str) -> None:
        """SSUBSCRIBE a room's channel on its shard; returns once Redis confirmed it."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel = channel_name(room)
        try:
            async with self._command_lock:
                self._confirmations.setdefault(channel, collections.deque()).append(waiter)
                await self._pubsub.ssubscribe(channel)
                self._sync_readers()
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(waiter)
        except (TimeoutError, *OS_ERRORS) as exc:
            self._drop_waiter(channel, waiter)
            raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
        self._subscribed.add(room)
        self._schedule_state_check()

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room's messages, unless it became local again meanwhile."""
        async with self._command_lock:
            if self._delivery.is_local(room):
                return
            self._subscribed.discard(room)
            self._live.pop(room, None)
            self._filling.pop(room, None)
            with contextlib.suppress(*OS_ERRORS):
                await self._pubsub.sunsubscribe(channel_name(room))
        self._schedule_state_check()

    async def barrier(self, timeout: float) -> bool:
        """No barrier across shards: a PING orders one connection, a cluster has several.

        Joins stay exact without it (the hub's watermark); a joiner just waits in
        ``ahead`` until the live stream passes its position.
        """
        return False

    # Readers: one task per primary

    def _sync_readers(self) -> None:
        """Start a reader for every primary of the slot map that has none."""
        if self._closing:
            return
        for node in self._cluster.get_primaries():
            task = self._readers.get(node.name)
            if task is None or task.done():
                self._readers[node.name] = asyncio.create_task(
                    self._read_node(node), name=f"redis-reader-{node.name}"
                )

    def _wanted(self, node_name: str) -> bool:
        primaries = {node.name for node in self._cluster.get_primaries()}
        return node_name in primaries or node_name in self._live.values()

    async def _read_node(self, node: ClusterNode) -> None:
        attempt = 0
        while not self._closing:
            # The slot map's current object for this node (a refresh replaces them).
            node = self._cluster.get_node(node_name=node.name) or node
            started = time.monotonic()
            try:
                message = await self._pubsub.get_sharded_message(
                    ignore_subscribe_messages=False, timeout=READ_TIMEOUT, target_node=node
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lose_node(node.name, exc)
                if not self._wanted(node.name):
                    break
                await asyncio.sleep(jittered_backoff(attempt, base=0.05, cap=1.0))
                attempt += 1
                continue
            attempt = 0
            if node.name in self._nodes_down:
                self._nodes_down.discard(node.name)
                log_event(
                    logger,
                    logging.INFO,
                    "redis cluster node back",
                    event="redis_node_up",
                    node=node.name,
                )
            if message is None:
                if not self._wanted(node.name):
                    break
                if time.monotonic() - started < IDLE_POLL:
                    await asyncio.sleep(IDLE_POLL)  # no subscription on this node yet
                continue
            self._dispatch(node.name, message)
        if self._readers.get(node.name) is asyncio.current_task():
            del self._readers[node.name]

    def _dispatch(self, node_name: str, message: dict[str, Any]) -> None:
        """Handle one message of a primary's connection. Never awaits: hot path."""
        kind = message["type"]
        if kind == "smessage":
            room = room_of_channel(message["channel"])
            offset, _, frame = message["data"].partition(b" ")
            held = self._filling.get(room)
            if held is not None:
                held.append((offset.decode(), frame))
            else:
                self._delivery.deliver(room, offset.decode(), frame)
        elif kind == "ssubscribe":
            channel = message["channel"]
            room = room_of_channel(channel)
            waiters = self._confirmations.get(channel)
            if waiters or room in self._subscribed:  # (not a late one for a room left)
                self._live[room] = node_name
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._confirmations[channel]
                if not waiter.done():
                    waiter.set_result(None)
            elif self._delivery.is_local(room):
                self._start_fill(room)  # a re-subscription: fill what it missed
            self._schedule_state_check()
        elif kind == "sunsubscribe":
            room = room_of_channel(message["channel"])
            if self._live.get(room) == node_name:
                del self._live[room]
                if room in self._subscribed:
                    self._heal_wanted.set()  # Redis moved the slot away from this node
            self._schedule_state_check()

    def _lose_node(self, node_name: str, error: BaseException) -> None:
        lost = [room for room, name in self._live.items() if name == node_name]
        for room in lost:
            del self._live[room]
        if lost:
            self._heal_wanted.set()
        if lost and node_name not in self._nodes_down:
            self._nodes_down.add(node_name)  # logged once per outage, not once per retry
            log_event(
                logger,
                logging.WARNING,
                "redis cluster node lost",
                event="redis_node_down",
                node=node_name,
                rooms=len(lost),
                error=type(error).__name__,
            )
        self._schedule_state_check()

    # Gap fills

    def _start_fill(self, room: str) -> None:
        if not self._history_enabled:
            return
        if room in self._fills:
            self._refill.add(room)  # it confirmed again while filling: fill once more
            return
        self._filling.setdefault(room, [])
        self._fills[room] = asyncio.create_task(self._fill(room), name=f"redis-fill-{room}")

    async def _fill(self, room: str) -> None:
        """Deliver what a room missed, then its held-back live messages, in order."""
        attempt = 0
        try:
            while not self._closing and self._delivery.is_local(room):
                self._refill.discard(room)
                try:
                    async with self._in_flight:
                        await fill_gap(self._cluster, self._delivery, room, self._history_size)
                except OS_ERRORS:
                    # Held-back messages are in history: the next try reads them.
                    self._filling[room] = []
                    await asyncio.sleep(jittered_backoff(attempt))
                    attempt += 1
                    continue
                held = self._filling.pop(room, [])
                for offset, frame in held:
                    self._delivery.deliver(room, offset, frame)
                if room not in self._refill:
                    return
                self._filling[room] = []
        finally:
            self._filling.pop(room, None)
            del self._fills[room]

    # Probe and healer

    async def _run_probe(self) -> None:
        while not self._closing:
            ok = True
            try:
                async with asyncio.timeout(self._probe_timeout):
                    await self._cluster.ping(target_nodes=RedisCluster.PRIMARIES)
            except (TimeoutError, *OS_ERRORS):
                ok = False
            self._probe_ok = ok
            if ok:
                self._sync_readers()
            if self._lost_rooms():
                self._heal_wanted.set()
            self._state_changed()
            await asyncio.sleep(self._probe_interval)

    async def _run_healer(self) -> None:
        """Re-subscribe rooms whose subscription is not live on their slot's owner."""
        attempt = 0
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._heal_wanted.wait()
            self._heal_wanted.clear()
            lost = self._lost_rooms()
            if not lost:
                attempt = 0
                continue
            healed = True
            for room in lost:
                if not self._delivery.is_local(room):
                    continue
                try:
                    async with self._command_lock:
                        # A keyed read lets redis-py find the slot's owner (MOVED,
                        # or a new slot map after a connection error).
                        await self._cluster.exists(history_key(room))
                        await self._pubsub.ssubscribe(channel_name(room))
                        self._sync_readers()
                except OS_ERRORS:
                    healed = False
                    break  # the shard is still away: back off rather than try every room
            if not healed:
                await asyncio.sleep(jittered_backoff(attempt))
                attempt += 1

    def _drop_waiter(self, channel: bytes, waiter: asyncio.Future[None]) -> None:
        waiters = self._confirmations.get(channel)
        if waiters and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._confirmations[channel]
        if not waiter.done():
            waiter.cancel()

    def _fail_waiters(self, error: BrokerUnavailable) -> None:
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
                    waiter.exception()
        self._confirmations.clear()
