"""The inbound token bucket, and FleetConnection's slim state (unit tests)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import re
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from wsfleet.connection import FleetConnection, TokenBucket, text_frame


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(50.0, 100, 0.0)
    assert all(bucket.take(0.0) for _ in range(100))
    assert not bucket.take(0.0)
    assert bucket.take(0.02)  # one token per 20 ms at 50/s


def test_sustained_abuse_is_detected_but_a_client_at_the_limit_is_not() -> None:
    polite = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    for _ in range(1000):  # exactly at the limit for 20 s
        assert polite.take(now)
        now += 0.02
    assert not polite.abusive

    abuser = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    while not abuser.abusive and now < 10:
        abuser.take(now)
        now += 0.005  # 200 frames/s against a 50/s limit
    assert abuser.abusive
    assert now < 3


def test_more_than_burst_refusals_within_the_window_is_abuse_exactly() -> None:
    bucket = TokenBucket(0.001, 10, 0.0, window=10.0)
    assert all(bucket.take(0.0) for _ in range(10))
    assert not any(bucket.take(0.0) for _ in range(10))
    assert not bucket.abusive  # 10 refusals: at the bound
    assert not bucket.take(0.0)
    assert bucket.abusive  # the 11th


def test_steady_twice_the_limit_is_abuse_and_refusals_spread_out_are_not() -> None:
    steady = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    while not steady.abusive and now < 10:
        steady.take(now)
        now += 1 / 99  # 99 frames/s against 50/s: about 49 refused per second
    assert steady.abusive and now < 5

    spread = TokenBucket(50.0, 100, 0.0)
    now = 0.0
    for _ in range(30):  # bursts of 110 every 11 s: 10 refusals each time
        for _ in range(110):
            spread.take(now)
        now += 11.0
    assert not spread.abusive


# FleetConnection replaces websockets' Connection.__init__ to keep idle connections
# small; these tests catch a websockets release that changes what it relies on.


def _attributes_set_by(function: Any) -> set[str]:
    return set(re.findall(r"self\.(\w+)(?:: [^=\n]+)? = ", inspect.getsource(function)))


def test_every_attribute_websockets_sets_in_init_has_a_value() -> None:
    expected = _attributes_set_by(Connection.__init__) | _attributes_set_by(
        ServerConnection.__init__
    )
    assert "pending_pings" in expected and "request_rcvd" in expected  # the regex works
    ours = _attributes_set_by(FleetConnection.__init__)
    missing = {name for name in expected - ours if name not in vars(FleetConnection)}
    assert not missing, f"websockets sets attributes FleetConnection lacks: {missing}"


async def _serve_one(check: Callable[[FleetConnection, weakref.ref[Request]], None]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler(connection: ServerConnection) -> None:
        assert isinstance(connection, FleetConnection)
        assert connection.request is not None
        request = weakref.ref(connection.request)
        connection.opened()
        try:
            check(connection, request)
            await connection.send("checked")
            assert await connection.recv() == "echo"
            await connection.send("echo")
        except BaseException as exc:
            done.set_exception(exc)
            raise
        done.set_result(None)

    async with serve(
        handler, "127.0.0.1", 0, create_connection=FleetConnection, ping_interval=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as client:
            assert await client.recv() == "checked"
            await client.send("echo")
            assert await client.recv() == "echo"
        await asyncio.wait_for(done, 5)


async def test_open_connection_keeps_no_handshake_and_a_compact_dict() -> None:
    def check(connection: FleetConnection, request: weakref.ref[Request]) -> None:
        gc.collect()
        assert connection.request is None and connection.response is None
        assert request() is None, "something still holds the handshake request"
        # CPython 3.11 keeps a compact shared-key __dict__ up to ~29 attributes.
        assert len(vars(connection)) <= 20, sorted(vars(connection))
        assert connection.pending_pings == {} and not connection.drain_waiters
        assert connection.close_timeout == 10 and connection.ping_interval is None

    await _serve_one(check)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_frame_matches_websockets_framing(size: int) -> None:
    payload = b"x" * size
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected
