"""An async client for wsfleet servers that survives restarts without losing messages.

:class:`Client` connects, reconnects with jittered exponential backoff (waiting
``reconnectAfter`` when a draining server asks for it), rejoins its rooms with
``since``/``epoch`` so the server replays what was missed, drops duplicates by
offset, and yields messages as an async iterator::

    async with Client("ws://127.0.0.1:8765/ws", rooms=["lobby"]) as client:
        await client.publish("lobby", {"text": "hi"})
        async for message in client:
            print(message.room, message.content)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsfleet import codec
from wsfleet.protocol import compare_offsets

__all__ = ["Client", "Message", "PublishError", "RoomResync"]


@dataclass(frozen=True, slots=True)
class Message:
    """A ``message`` event of a room."""

    room: str
    offset: str
    sender: str
    content: Any
    ts: int


@dataclass(frozen=True, slots=True)
class RoomResync:
    """A (re)join that could not replay what was missed (``recovered: false``).

    Yielded by the iterator so the application can resynchronise from its own
    source of truth. Not yielded for the very first join of a room.
    """

    room: str
    epoch: str | None
    offset: str | None


class PublishError(Exception):
    """The server answered a publish with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(slots=True)
class _RoomState:
    epoch: str | None = None
    offset: str | None = None
    joined_once: bool = False


@dataclass(slots=True)
class _Stats:
    connects: int = 0
    duplicates_dropped: int = 0
    servers: list[str] = field(default_factory=list)


class Client:
    """See the module docstring. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        *,
        rooms: Iterable[str] = (),
        token: str | None = None,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        max_queue: int = 10_000,
    ) -> None:
        self.url = _with_token(url, token) if token else url
        self._rooms: dict[str, _RoomState] = {room: _RoomState() for room in rooms}
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._events: asyncio.Queue[Message | RoomResync] = asyncio.Queue(max_queue)
        self._connection: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)
        self._reconnect_after: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._background: set[asyncio.Future[None]] = set()
        self.stats = _Stats()
        self.server: str | None = None  # instance id from the last welcome

    async def __aenter__(self) -> Client:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._connection is not None:
            await self._connection.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until connected and every room is joined."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    # Rooms and publishing

    async def join(self, room: str) -> None:
        if room not in self._rooms:
            self._rooms[room] = _RoomState()
            if self._connection is not None and self._connected.is_set():
                await self._send({"type": "join", "room": room})

    async def leave(self, room: str) -> None:
        if self._rooms.pop(room, None) is not None and self._connection is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._send({"type": "leave", "room": room})

    async def publish(self, room: str, content: Any, *, timeout: float = 10.0) -> str:
        """Publish and wait for the ack; returns the offset. Retries across reconnects
        only while no ack could have been sent (the frame never left)."""
        async with asyncio.timeout(timeout):
            while True:
                await self._connected.wait()
                request_id = f"p{next(self._ids)}"
                waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                self._pending[request_id] = waiter
                connection = self._connection
                try:
                    await self._send(
                        {"type": "message", "room": room, "content": content, "id": request_id}
                    )
                except ConnectionClosed:
                    self._pending.pop(request_id, None)
                    # The connection closed before the connection loop has seen it
                    # (a failed send does not yield): wait for the next one rather
                    # than retry at once, which would spin without ever letting the
                    # loop (or this call's own timeout) run.
                    if self._connection is connection:
                        self._connected.clear()
                    continue
                try:
                    return await waiter
                finally:
                    self._pending.pop(request_id, None)

    def __aiter__(self) -> AsyncIterator[Message | RoomResync]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message | RoomResync]:
        while True:
            yield await self._events.get()

    async def next_message(self, timeout: float = 10.0) -> Message:
        """The next :class:`Message`, skipping resync notices."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._events.get()
                if isinstance(event, Message):
                    return event

    # Connection loop

    async def _send(self, frame: dict[str, Any]) -> None:
        connection = self._connection
        if connection is None:
            raise ConnectionClosed(None, None)
        await connection.send(codec.dumps(frame).decode())

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_max, self._backoff_base * 2 ** min(attempt, 20)))

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                async with websockets.connect(
                    self.url, compression=None, open_timeout=10, max_size=2**22
                ) as connection:
                    self._connection = connection
                    self.stats.connects += 1
                    attempt = 0
                    await self._session(connection)
            except (OSError, ConnectionClosed, InvalidStatus, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus):
                    retry_after = exc.response.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        self._reconnect_after = float(retry_after)
            finally:
                self._connection = None
                self._connected.clear()
                for waiter in self._pending.values():
                    if not waiter.done():
                        waiter.set_exception(ConnectionClosed(None, None))
            if self._closed:  # close() may have run meanwhile
                break  # type: ignore[unreachable]
            delay = self._reconnect_after
            self._reconnect_after = None
            if delay is None:
                delay = self._backoff(attempt)
                attempt += 1
            await asyncio.sleep(delay)

    async def _session(self, connection: ClientConnection) -> None:
        for room, state in self._rooms.items():
            frame: dict[str, Any] = {"type": "join", "room": room}
            if state.offset is not None and state.epoch is not None:
                frame["since"] = state.offset
                frame["epoch"] = state.epoch
            await self._send(frame)
        awaiting = set(self._rooms)
        if not awaiting:
            self._connected.set()
        async for raw in connection:
            event = codec.loads(raw)
            kind = event.get("type")
            if kind == "message":
                await self._on_message(event)
            elif kind == "joined":
                await self._on_joined(event)
                awaiting.discard(event["room"])
                if not awaiting:
                    self._connected.set()
            elif kind == "ack":
                waiter = self._pending.get(event.get("id"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(event["offset"])
            elif kind == "error":
                waiter = self._pending.get(event.get("id"))
                if waiter is not None and not waiter.done():
                    waiter.set_exception(PublishError(event["code"], event["message"]))
                elif event.get("code") == "unavailable" and event.get("room") in self._rooms:
                    # A join refused while Redis is away: ask again shortly.
                    asyncio.get_running_loop().call_later(
                        0.5, self._rejoin_later, connection, event["room"]
                    )
            elif kind == "welcome":
                self.server = event.get("server")
                self.stats.servers.append(str(self.server))
            elif kind == "server-shutdown":
                self._reconnect_after = float(event.get("reconnectAfter", 0)) / 1000

    def _rejoin_later(self, connection: ClientConnection, room: str) -> None:
        if connection is self._connection and room in self._rooms:
            state = self._rooms[room]
            frame: dict[str, Any] = {"type": "join", "room": room}
            if state.offset is not None and state.epoch is not None:
                frame.update(since=state.offset, epoch=state.epoch)
            task = asyncio.ensure_future(connection.send(codec.dumps(frame).decode()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _on_joined(self, event: dict[str, Any]) -> None:
        state = self._rooms.get(event["room"])
        if state is None:
            return
        if state.joined_once and not event.get("recovered"):
            await self._events.put(
                RoomResync(event["room"], event.get("epoch"), event.get("offset"))
            )
        if not event.get("recovered"):
            state.offset = event.get("offset")
        state.epoch = event.get("epoch")
        state.joined_once = True

    async def _on_message(self, event: dict[str, Any]) -> None:
        state = self._rooms.get(event["room"])
        if state is None:
            return
        offset = event["offset"]
        if state.offset is not None and compare_offsets(offset, state.offset) <= 0:
            self.stats.duplicates_dropped += 1
            return
        state.offset = offset
        await self._events.put(
            Message(event["room"], offset, event["from"], event["content"], event["ts"])
        )


def _with_token(url: str, token: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"token": token})))


async def run_terminal_client(url: str, room: str, token: str | None) -> int:
    """``wsfleet client``: print what arrives, send each typed line as a message."""
    async with Client(url, rooms=[room], token=token) as client:

        async def printer() -> None:
            async for event in client:
                if isinstance(event, Message):
                    content = codec.dumps(event.content).decode()
                    print(f"[{event.room} {event.offset}] {event.sender}: {content}", flush=True)
                else:
                    print(f"[{event.room}] history lost; resynchronise", flush=True)

        printing = asyncio.create_task(printer())
        try:
            await client.wait_connected(timeout=30)
            print(
                f"joined {room} on {client.server}; type a line to send it, Ctrl-D to quit",
                file=sys.stderr,
            )
            while True:
                line = await asyncio.to_thread(sys.stdin.readline)
                if not line:
                    break
                text = line.rstrip("\n")
                if text:
                    try:
                        await client.publish(room, text)
                    except (PublishError, TimeoutError) as exc:
                        print(f"not sent: {exc}", file=sys.stderr)
        finally:
            printing.cancel()
    return 0
