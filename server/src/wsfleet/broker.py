"""Redis side of the server: atomic store-and-publish, history reads, subscriptions.

One dedicated task owns the subscriber connection. It reads Redis and hands every
message to the hub at once, without awaiting any client, so a slow client never
slows the reader (Redis drops subscribers whose output buffer overflows). When the
connection drops, the task reconnects with jittered exponential backoff,
resubscribes every local room, and fills the gap from the rooms' history after each
room's delivery watermark (see :mod:`wsfleet.hub`) before it relays live messages
again, so delivery resumes without clients reconnecting; what the fill and the new
subscription both bring is dropped by the watermark.

Commands (publish, join reads, probes) go through a separate connection pool. The
publish script is idempotent per call (a token key records its offset for
:data:`PUBLISH_TOKEN_TTL_MS`), so retrying it over a fresh connection after a lost
reply never stores a message twice. Keys use a ``{room}`` hash tag so that a room's
keys share one cluster slot. With ``publish_replicas`` the script and a ``WAIT``
travel in one pipeline on one connection, so ``WAIT`` covers the script's write.

:class:`RedisBroker` talks to one Redis; :mod:`wsfleet.cluster_broker` has the Redis
Cluster twin. Both share the key names, the publish call, the frames read from
history and the gap fill defined here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from wsfleet.batching import Batcher
from wsfleet.logs import log_event
from wsfleet.protocol import message_frame

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Delivery",
    "JoinState",
    "NotReplicated",
    "RedisBroker",
    "fill_gap",
    "jittered_backoff",
    "publish_call",
    "stored_frames",
]

logger = logging.getLogger("wsfleet.broker")

KEY_PREFIX = "wsfleet"


def history_key(room: str) -> str:
    return f"{KEY_PREFIX}:{{{room}}}:history"


def epoch_key(room: str) -> str:
    return f"{KEY_PREFIX}:{{{room}}}:epoch"


def publish_key(room: str, token: str) -> str:
    """Records one publish call's offset for a while, so that its retry is not stored twice."""
    return f"{KEY_PREFIX}:{{{room}}}:pub:{token}"


# Long enough to outlive every retry of one publish call (socket and connect timeouts).
PUBLISH_TOKEN_TTL_MS = 30_000
# Attempts of one publish call over broken connections (each may be retried by the pool).
PUBLISH_ATTEMPTS = 2

# Publish batches in flight at once per instance (see wsfleet.batching), and the
# most publish calls one pipeline carries.
PUBLISH_LANES = 2
PUBLISH_BATCH = 256

# Keys and arguments of one call of the publish script (see publish_call).
PublishCall = tuple[list[str], list[bytes | str | int]]


def channel_name(room: str) -> bytes:
    return f"{KEY_PREFIX}:{{{room}}}".encode()


def room_of_channel(channel: bytes) -> str:
    # "wsfleet:{room}" -> "room"
    return channel[len(KEY_PREFIX) + 2 : -1].decode()


def jittered_backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """ "Full jitter" backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


# What redis-py lets through when a connection dies under it: OSError from the
# socket, and RuntimeError from uvloop when redis-py writes to a transport that
# has just closed (seen on a join while Redis killed the client's connection).
TRANSPORT_FAILURES = (OSError, RuntimeError)


class BrokerUnavailable(Exception):
    """Redis did not answer: nothing was stored or delivered; the caller may retry."""


class NotReplicated(BrokerUnavailable):
    """Stored and published, but ``WAIT`` did not confirm it on enough replicas in time.

    The message may still be delivered; it may also be lost if its primary dies before
    a replica has it. The publisher gets ``unavailable``, never a silent ack.
    """


@dataclass(slots=True)
class JoinState:
    """What a join needs from Redis, read atomically (see ``lua/join.lua``)."""

    epoch: str | None
    latest: str | None
    recovered: bool
    entries: list[tuple[str, bytes]] = field(default_factory=list)  # (offset, frame)


class Delivery(Protocol):
    """The local side that receives messages from the subscriber task (the hub)."""

    def deliver(self, room: str, offset: str, frame: bytes) -> None: ...

    def resume_point(self, room: str) -> tuple[bool, str | None]: ...

    def resync(self, room: str, latest: str | None, epoch: str | None) -> None: ...

    def local_rooms(self) -> list[str]: ...

    def is_local(self, room: str) -> bool: ...


class Broker(Protocol):
    """What the hub, sessions, HTTP endpoints and drain use: one Redis or a Redis Cluster."""

    @property
    def up(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, room: str, sender_json: bytes, content_json: bytes) -> str: ...

    async def join_state(self, room: str, since: str | None, epoch: str | None) -> JoinState: ...

    async def history_after(self, room: str, after: str | None) -> list[tuple[str, bytes]]: ...

    async def subscribe(self, room: str) -> None: ...

    async def unsubscribe(self, room: str) -> None: ...

    async def barrier(self, timeout: float) -> bool: ...


def load_script(name: str) -> str:
    return resources.files("wsfleet").joinpath("lua", name).read_text(encoding="utf-8")


def publish_call(
    room: str,
    sender_json: bytes,
    content_json: bytes,
    history_size: int,
    history_ttl_ms: int,
    command: str = "PUBLISH",
) -> tuple[list[str], list[bytes | str | int]]:
    """Keys and arguments of one publish call (``lua/publish.lua``), with a fresh token."""
    token = secrets.token_hex(12)
    keys = [history_key(room), epoch_key(room), publish_key(room, token)]
    args: list[bytes | str | int] = [
        channel_name(room),
        room,
        sender_json,
        content_json,
        history_size,
        history_ttl_ms,
        secrets.token_hex(8),
        PUBLISH_TOKEN_TTL_MS,
        command,
    ]
    return keys, args


def stored_frames(room: str, entries: Iterable[Any]) -> list[tuple[str, bytes]]:
    """``(offset, message frame)`` of history entries, as live delivery relays them."""
    frames = []
    for raw_offset, raw_fields in entries:
        offset = raw_offset.decode()
        if isinstance(raw_fields, dict):
            sender, content = raw_fields.get(b"f"), raw_fields.get(b"c")
        else:
            pairs = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
            sender, content = pairs.get(b"f"), pairs.get(b"c")
        if not sender or not content:
            continue  # a placeholder entry written while history was off
        frames.append((offset, message_frame(room, offset, sender, content)))
    return frames


def join_call(
    room: str, since: str | None, epoch: str | None, history_ttl_ms: int, history_size: int
) -> tuple[list[str], list[Any]]:
    """Keys and arguments of ``lua/join.lua`` for one join (the same on a cluster)."""
    keys = [history_key(room), epoch_key(room)]
    args = [history_ttl_ms, secrets.token_hex(8), since or "", epoch or "", history_size]
    return keys, args


def join_state_of(room: str, reply: Any) -> JoinState:
    """The :class:`JoinState` that ``lua/join.lua``'s reply describes."""
    room_epoch = reply[0].decode() if reply[0] else None
    latest = reply[1].decode() if reply[1] else None
    recovered = bool(reply[2])
    entries = stored_frames(room, reply[3]) if len(reply) > 3 else []
    return JoinState(room_epoch, latest, recovered, entries)


async def fill_gap(client: Any, delivery: Delivery, room: str, history_size: int) -> None:
    """Deliver a room's stored messages after its delivery watermark (a Redis or a cluster).

    Everything goes through the hub's ``deliver``, whose watermark drops what members
    have already, so the overlap between history and what a new subscription relays
    reaches nobody twice.
    """
    known, after = delivery.resume_point(room)
    if not delivery.is_local(room):
        return
    key = history_key(room)
    if known and after is not None:
        entries: Any = await client.xrange(key, after, "+", history_size + 1)
        if entries and entries[0][0].decode() != after:
            # History no longer holds the last offset delivered. When older entries are
            # still there, nothing after it was trimmed: that one write was lost (a
            # failover before its replication) and the rest follows in full. Otherwise
            # what came after it may be lost, so members are told instead of skipped.
            older: Any = await client.xrevrange(key, "(" + after, "-", 1)
            if not older:
                epoch = await client.get(epoch_key(room))
                delivery.resync(
                    room,
                    entries[-1][0].decode(),
                    epoch.decode() if isinstance(epoch, bytes) else None,
                )
                return
            frames = stored_frames(room, entries)
        else:
            frames = stored_frames(room, entries[1:])
    else:
        start = "-" if after is None else "(" + after
        frames = stored_frames(room, await client.xrange(key, start, "+", history_size))
    for offset, frame in frames:
        delivery.deliver(room, offset, frame)


class RedisBroker:
    """Store, publish and subscribe through Redis; track whether Redis is usable."""

    def __init__(
        self,
        redis_url: str,
        *,
        password: str | None,
        history_size: int,
        history_ttl: float,
        delivery: Delivery,
        publish_replicas: int = 0,
        publish_replicas_timeout: float = 1.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 1.0,
        on_state_change: Any = None,
    ) -> None:
        pool_options: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
            "socket_keepalive": True,
            # One retry covers a pooled connection that went stale across a Redis
            # restart; more would only delay the `unavailable` answer.
            "retry": Retry(NoBackoff(), 1, (RedisConnectionError,)),
        }
        if password is not None:
            pool_options["password"] = password
        # A burst of joins or publishes (every client of an instance rejoining at once)
        # waits for a free connection: the plain pool refuses past 100 connections
        # (MaxConnectionsError), which clients saw as `unavailable` joins.
        self._pool: ConnectionPool = BlockingConnectionPool.from_url(
            redis_url, max_connections=100, timeout=5.0, **pool_options
        )
        self._redis = Redis(connection_pool=self._pool)
        self._publish_source = load_script("publish.lua")
        # Redis names a script by its SHA-1 (EVALSHA): an identifier, not security.
        self._publish_sha = hashlib.sha1(
            self._publish_source.encode(), usedforsecurity=False
        ).hexdigest()
        # Publishes that arrive while others are on their way go to Redis together,
        # as one pipeline on one connection (see wsfleet.batching).
        self._publishes: Batcher[PublishCall] = Batcher(
            self._send_publishes,
            lanes=PUBLISH_LANES,
            max_batch=PUBLISH_BATCH,
        )
        self._join_script = self._redis.register_script(load_script("join.lua"))
        self._publish_replicas = publish_replicas
        self._wait_timeout_ms = max(1, round(publish_replicas_timeout * 1000))
        self._history_size = history_size
        self._history_ttl_ms = int(history_ttl * 1000)
        self._history_enabled = history_size > 0 and self._history_ttl_ms > 0
        self._delivery = delivery
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._on_state_change = on_state_change

        # Serializes SUBSCRIBE/UNSUBSCRIBE so that a room that leaves and comes back
        # at once ends up subscribed.
        self._command_lock = asyncio.Lock()
        self._confirmations: dict[bytes, collections.deque[asyncio.Future[None]]] = {}
        self._pongs: collections.deque[asyncio.Future[None]] = collections.deque()
        self._subscriber: AbstractConnection | None = None
        self._subscriber_up = False
        self._probe_ok = False
        self._resync_buffer: list[tuple[str, str, bytes]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # State

    @property
    def up(self) -> bool:
        """True when commands succeed and the subscriber connection is live."""
        return self._subscriber_up and self._probe_ok

    def _state_changed(self) -> None:
        if self._on_state_change is not None:
            self._on_state_change(self.up)

    async def start(self) -> None:
        """Start the subscriber and the probe; returns at once (Redis may be down)."""
        self._tasks = [
            asyncio.create_task(self._run_subscriber(), name="redis-subscriber"),
            asyncio.create_task(self._run_probe(), name="redis-probe"),
        ]

    async def close(self) -> None:
        """Stop both tasks and close every Redis connection."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._publishes.close()
        self._fail_waiters(BrokerUnavailable("broker closed"))
        if self._subscriber is not None:
            await self._subscriber.disconnect()
        await self._redis.aclose()
        await self._pool.disconnect()
        self._subscriber_up = self._probe_ok = False
        self._state_changed()

    # Commands

    async def publish(self, room: str, sender_json: bytes, content_json: bytes) -> str:
        """Store a message in the room's history and publish it; return its offset.

        Raises :class:`BrokerUnavailable` when Redis is known to be down or fails to
        answer. Calls of one loop iteration (or made while a batch is on its way)
        travel together, as one pipeline. Each call carries a fresh token that
        the script records with the offset (``lua/publish.lua``): a retry of the
        same call after a lost reply (the pool retries once on a broken connection,
        and so does :meth:`_send_publishes`) returns the stored offset instead of
        storing the message again.
        """
        if not self.up:
            raise BrokerUnavailable("redis is unavailable")
        call = publish_call(
            room, sender_json, content_json, self._history_size, self._history_ttl_ms
        )
        try:
            offset = await self._publishes.submit(call)
        except RuntimeError as exc:  # the broker closed meanwhile
            raise BrokerUnavailable("broker closed") from exc
        assert isinstance(offset, str)
        return offset

    async def _send_publishes(self, calls: list[PublishCall]) -> list[object]:
        """One batch of publish calls as one pipeline; each call's offset or error."""
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                return await self._pipeline_publishes(calls)
            except RedisError as exc:
                if attempt + 1 == PUBLISH_ATTEMPTS or not isinstance(exc, RedisConnectionError):
                    raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
            except TRANSPORT_FAILURES as exc:
                raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    async def _pipeline_publishes(
        self, calls: list[PublishCall], *, script_loaded: bool = False
    ) -> list[object]:
        """EVALSHA per call (and a WAIT after them all) in one pipeline.

        With ``publish_replicas`` the ``WAIT`` on the same connection covers every
        script call of the batch. A Redis that lost its scripts (a restart)
        answers NOSCRIPT without running anything: the script is loaded and the
        batch sent again.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(self._publish_sha, len(keys), *keys, *args)
            if self._publish_replicas:
                pipe.execute_command("WAIT", self._publish_replicas, self._wait_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        if not script_loaded and any(isinstance(reply, NoScriptError) for reply in replies):
            await self._redis.script_load(self._publish_source)
            return await self._pipeline_publishes(calls, script_loaded=True)
        shortfall: BrokerUnavailable | None = None
        if self._publish_replicas:
            replicas = replies.pop()
            if isinstance(replicas, Exception):
                shortfall = BrokerUnavailable(f"redis error: {type(replicas).__name__}")
            elif int(replicas) < self._publish_replicas:
                shortfall = NotReplicated(
                    f"WAIT confirmed {replicas} of {self._publish_replicas} replicas"
                )
        outcomes: list[object] = []
        for reply in replies:
            if isinstance(reply, Exception):
                outcomes.append(BrokerUnavailable(f"redis error: {type(reply).__name__}"))
            elif shortfall is not None:
                outcomes.append(shortfall)
            else:
                outcomes.append(reply.decode() if isinstance(reply, bytes) else str(reply))
        return outcomes

    async def join_state(self, room: str, since: str | None, epoch: str | None) -> JoinState:
        """Epoch, latest offset and (when resumable) the messages after ``since``."""
        if not self.up:
            raise BrokerUnavailable("redis is unavailable")
        if not self._history_enabled:
            return JoinState(epoch=None, latest=None, recovered=False)
        keys, args = join_call(room, since, epoch, self._history_ttl_ms, self._history_size)
        try:
            reply = await self._join_script(keys=keys, args=args)
        except (RedisError, *TRANSPORT_FAILURES) as exc:
            raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc
        return join_state_of(room, reply)

    async def history_after(self, room: str, after: str | None) -> list[tuple[str, bytes]]:
        """Stored messages with offsets after ``after`` (all of them when None)."""
        start = "-" if after is None else "(" + after
        entries: Any = await self._redis.xrange(history_key(room), start, "+", self._history_size)
        return stored_frames(room, entries or [])

    # Subscriptions

    async def subscribe(self, room: str) -> None:
        """Subscribe to a room's channel; returns once Redis confirmed the subscription."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel = channel_name(room)
        try:
            async with self._command_lock:
                subscriber = self._subscriber
                if subscriber is None or not self._subscriber_up:
                    raise BrokerUnavailable("redis is unavailable")
                self._confirmations.setdefault(channel, collections.deque()).append(waiter)
                await subscriber.send_command("SUBSCRIBE", channel, check_health=False)
            await waiter
        except (RedisError, OSError, RuntimeError) as exc:
            raise BrokerUnavailable(f"redis error: {type(exc).__name__}") from exc

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room's messages, unless it became local again meanwhile."""
        async with self._command_lock:
            subscriber = self._subscriber
            if self._delivery.is_local(room) or subscriber is None or not self._subscriber_up:
                return  # a (re)connection subscribes only to the rooms that are local
            # On failure the reader notices the broken connection and resubscribes.
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await subscriber.send_command("UNSUBSCRIBE", channel_name(room), check_health=False)

    async def barrier(self, timeout: float) -> bool:
        """Wait until every message published before this call has been delivered.

        A PING on the subscriber connection is answered after every message Redis
        queued for us before it, so its reply marks that point in the stream.
        """
        subscriber = self._subscriber
        if subscriber is None or not self._subscriber_up:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await subscriber.send_command("PING", check_health=False)
                await waiter
        except (TimeoutError, RedisError, OSError, RuntimeError, BrokerUnavailable):
            # (uvloop raises RuntimeError for a write to a transport closed meanwhile.)
            return False
        finally:
            if waiter in self._pongs and not waiter.done():
                waiter.cancel()
        return True

    # Subscriber task

    def _new_subscriber(self) -> AbstractConnection:
        options = dict(self._pool.connection_kwargs)
        # The subscriber waits for messages as long as it takes; liveness is checked
        # by the probe's PING instead of a read timeout.
        options["socket_timeout"] = None
        connection: AbstractConnection = self._pool.connection_class(**options)
        return connection

    async def _run_subscriber(self) -> None:
        attempt = 0
        outage_started: float | None = None
        while not self._closing:
            connection = self._new_subscriber()
            self._subscriber = connection
            try:
                await connection.connect()  # type: ignore[no-untyped-call]
                await self._resubscribe(connection)
                if outage_started is not None:
                    log_event(
                        logger,
                        logging.INFO,
                        "redis subscriber reconnected",
                        event="redis_up",
                        rooms=len(self._delivery.local_rooms()),
                        outage_seconds=round(time.monotonic() - outage_started, 3),
                    )
                outage_started = None
                attempt = 0
                await self._read_forever(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if outage_started is None:
                    outage_started = time.monotonic()
                    log_event(
                        logger,
                        logging.WARNING,
                        "redis subscriber lost",
                        event="redis_down",
                        error=type(exc).__name__,
                    )
            finally:
                self._subscriber_up = False
                self._resync_buffer = None
                self._fail_waiters(BrokerUnavailable("redis connection lost"))
                self._state_changed()
                with contextlib.suppress(Exception):  # it is already broken
                    await connection.disconnect()
            if not self._closing:
                await asyncio.sleep(jittered_backoff(attempt))
                attempt += 1

    async def _resubscribe(self, connection: AbstractConnection) -> None:
        """Subscribe to every local room, then deliver what was missed meanwhile."""
        rooms = sorted(self._delivery.local_rooms())
        if rooms:
            waiters = []
            for room in rooms:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._confirmations.setdefault(channel_name(room), collections.deque()).append(
                    waiter
                )
                waiters.append(waiter)
            await connection.send_command(
                "SUBSCRIBE", *[channel_name(room) for room in rooms], check_health=False
            )
            # Messages for rooms already confirmed are held back until the gap is filled.
            self._resync_buffer = []
            while not all(waiter.done() for waiter in waiters):
                self._dispatch(await connection.read_response(push_request=True))
            self._subscriber_up = True
            # (/health reads `up` now: the metric must agree while the gaps fill.)
            self._state_changed()
            await self._fill_gaps(rooms)
        self._subscriber_up = True
        self._state_changed()

    async def _fill_gaps(self, rooms: list[str]) -> None:
        """Deliver stored messages that were published while the subscriber was down."""
        for room in rooms if self._history_enabled else []:
            await fill_gap(self._redis, self._delivery, room, self._history_size)
        buffered, self._resync_buffer = self._resync_buffer or [], None
        for room, offset, frame in buffered:
            self._delivery.deliver(room, offset, frame)

    async def _read_forever(self, connection: AbstractConnection) -> None:
        while True:
            self._dispatch(await connection.read_response(push_request=True))

    def _dispatch(self, response: Any) -> None:
        """Handle one reply on the subscriber connection. Never awaits: hot path."""
        # Outside subscribed mode Redis answers PING with a plain "PONG".
        kind = response[0] if isinstance(response, list) else b"pong"
        if kind == b"message":
            offset, _, frame = response[2].partition(b" ")
            room = room_of_channel(response[1])
            if self._resync_buffer is not None:
                self._resync_buffer.append((room, offset.decode(), frame))
            else:
                self._delivery.deliver(room, offset.decode(), frame)
        elif kind == b"subscribe":
            waiters = self._confirmations.get(response[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiters:
                    del self._confirmations[response[1]]
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == b"pong":
            while self._pongs:
                waiter = self._pongs.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    def _fail_waiters(self, error: BrokerUnavailable) -> None:
        for waiters in self._confirmations.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
                    # Mark retrieved: a join that gave up already may not await it.
                    waiter.exception()
        self._confirmations.clear()
        for waiter in self._pongs:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()
        self._pongs.clear()

    # Probe task

    async def _run_probe(self) -> None:
        while not self._closing:
            ok = True
            try:
                async with asyncio.timeout(self._probe_timeout):
                    await self._redis.ping()
            except (TimeoutError, RedisError, OSError):
                ok = False
            if ok != self._probe_ok:
                self._probe_ok = ok
                self._state_changed()
            if ok and self._subscriber_up and not await self.barrier(self._probe_timeout):
                # A subscriber that no longer answers PING is as good as gone.
                log_event(logger, logging.WARNING, "redis subscriber stalled", event="redis_stall")
                subscriber = self._subscriber
                if subscriber is not None:
                    await subscriber.disconnect()
            await asyncio.sleep(self._probe_interval)
