"""Every error code, close code and handshake refusal of PROTOCOL.md."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import (
    Launcher,
    RedisProcess,
    ServerProcess,
    connect,
    join,
    publish,
    recv_json,
    send_json,
    unique_room,
)

SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
ORIGIN = "https://good.example"


def token(
    sub: str = "alice", rooms: list[str] | None = None, exp_in: float = 300, secret: str = SECRET
) -> str:
    claims: dict[str, object] = {"sub": sub, "exp": int(time.time() + exp_in)}
    if rooms is not None:
        claims["rooms"] = rooms
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture(scope="module")
def secured(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """An instance with JWT auth, an Origin allow-list and small limits."""
    launcher = Launcher(redis_server, tmp_path_factory.mktemp("secured"))
    yield launcher(
        "--jwt-secret",
        SECRET,
        "--allowed-origins",
        ORIGIN,
        "--max-rooms",
        "3",
        "--max-content-size",
        "100",
        "--max-frame-size",
        "2048",
        "--rate-limit",
        "5",
        "--rate-burst",
        "10",
    )
    launcher.stop_all()


async def refused_status(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(url, **kwargs)  # type: ignore[arg-type]
    return refused.value.response.status_code


async def test_handshake_refusals_401_and_403(secured: ServerProcess) -> None:
    rejected_before = secured.metric("ws_rejected_connections_total", 'reason="auth"')
    assert await refused_status(secured.url) == 401
    assert await refused_status(secured.url + "?token=garbage") == 401
    assert (
        await refused_status(
            secured.url + "?token=" + token(secret="another-secret-that-is-long-enough-for-hs256")
        )
        == 401
    )
    assert await refused_status(secured.url + "?token=" + token(exp_in=-60)) == 401
    no_sub = jwt.encode({"exp": int(time.time() + 60)}, SECRET, algorithm="HS256")
    assert await refused_status(secured.url + "?token=" + no_sub) == 401
    no_exp = jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")
    assert await refused_status(secured.url + "?token=" + no_exp) == 401
    assert secured.metric("ws_rejected_connections_total", 'reason="auth"') == rejected_before + 6

    good = secured.url + "?token=" + token()
    assert await refused_status(good, origin="https://evil.example") == 403
    connection, _ = await connect(good, origin=ORIGIN)
    await connection.close()
    connection, _ = await connect(good)  # no Origin header: not a browser, allowed
    await connection.close()


async def test_from_is_the_token_subject(secured: ServerProcess) -> None:
    room = unique_room()
    connection, _ = await connect(secured.url + "?token=" + token("bob"))
    await join(connection, room)
    await send_json(connection, {"type": "message", "room": room, "content": 1, "id": "1"})
    frames = [await recv_json(connection) for _ in range(2)]
    assert {frame["type"]: frame for frame in frames}["message"]["from"] == "bob"
    await connection.close()


async def test_forbidden_rooms_on_join_and_publish(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token(rooms=["team-*", "lobby"]))
    assert (await join(connection, "team-a"))["type"] == "joined"
    await send_json(connection, {"type": "join", "room": "secret"})
    assert await recv_json(connection) == {
        "type": "error",
        "code": "forbidden",
        "message": "your token does not allow this room",
        "room": "secret",
    }
    answer = await publish(connection, "secret", 1, "p1")
    assert (answer["type"], answer["code"], answer["room"]) == ("error", "forbidden", "secret")
    assert (await publish(connection, "lobby", 1, "p2"))["type"] == "ack"
    await connection.close()


@pytest.mark.parametrize(
    ("frame", "code", "echo"),
    [
        ("{not json", "bad_json", {}),
        ("[1, 2]", "bad_message", {}),
        ('{"room": "r"}', "bad_message", {"room": "r"}),
        ('{"type": 5}', "bad_message", {}),
        ('{"type": "message", "room": "r", "id": "m1"}', "bad_message", {"id": "m1", "room": "r"}),
        ('{"type": "message", "room": 7, "content": 1}', "bad_message", {}),
        (
            '{"type": "message", "room": "r", "content": 1, "id": 9}',
            "bad_message",
            {"id": 9, "room": "r"},
        ),
        ('{"type": "join", "room": "r", "since": "yesterday"}', "bad_message", {"room": "r"}),
        ('{"type": "shout", "id": "s"}', "unknown_type", {"id": "s"}),
        ('{"type": "join", "room": "no spaces"}', "bad_room", {"room": "no spaces"}),
        ('{"type": "join", "room": ""}', "bad_room", {"room": ""}),
        ('{"type": "leave", "room": "' + "x" * 129 + '"}', "bad_room", {"room": "x" * 129}),
        (
            '{"type": "message", "room": "r", "content": "' + "y" * 200 + '", "id": "big"}',
            "too_large",
            {"id": "big", "room": "r"},
        ),
    ],
)
async def test_invalid_frames_get_the_right_error_and_the_connection_stays_open(
    secured: ServerProcess, frame: str, code: str, echo: dict[str, object]
) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    await connection.send(frame)
    answer = await recv_json(connection)
    assert answer["type"] == "error"
    assert answer["code"] == code
    assert isinstance(answer["message"], str) and answer["message"]
    assert {key: answer[key] for key in ("id", "room") if key in answer} == echo
    await send_json(connection, {"type": "ping", "id": "still-open"})
    assert await recv_json(connection) == {"type": "pong", "id": "still-open"}
    await connection.close()


async def test_binary_frame_is_unsupported(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    await connection.send(b"\x00\x01")
    answer = await recv_json(connection)
    assert (answer["type"], answer["code"]) == ("error", "unsupported")
    await send_json(connection, {"type": "ping"})
    assert await recv_json(connection) == {"type": "pong", "id": None}
    await connection.close()


async def test_too_many_rooms(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    for n in range(3):
        await join(connection, f"many-{n}")
    await send_json(connection, {"type": "join", "room": "many-3"})
    answer = await recv_json(connection)
    assert (answer["code"], answer["room"]) == ("too_many_rooms", "many-3")
    assert (await join(connection, "many-0"))["type"] == "joined"  # rejoining is fine
    await connection.close()


async def test_frame_over_the_size_limit_closes_1009(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    await connection.send(json.dumps({"type": "ping", "id": "x" * 4000}))
    with pytest.raises(ConnectionClosed):
        await recv_json(connection)
    assert connection.close_code == 1009


async def test_rate_limited_then_closed_4029_on_sustained_abuse(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    codes: list[str] = []
    for n in range(60):
        try:
            await send_json(connection, {"type": "ping", "id": n})
        except ConnectionClosed:
            break
    try:
        while True:
            frame = await recv_json(connection)
            codes.append(frame.get("code", frame["type"]))
    except ConnectionClosed:
        pass
    assert codes[:10] == ["pong"] * 10
    assert "rate_limited" in codes
    assert connection.close_code == 4029


async def test_polite_client_is_never_rate_limited(secured: ServerProcess) -> None:
    connection, _ = await connect(secured.url + "?token=" + token())
    for n in range(15):  # 15 frames at ~4/s, under the 5/s limit
        await send_json(connection, {"type": "ping", "id": n})
        assert (await recv_json(connection))["type"] == "pong"
        await asyncio.sleep(0.02 if n < 8 else 0.25)
    await connection.close()
    assert connection.close_code == 1000


async def test_connection_limit_refuses_with_503_and_retry_after(launch: Launcher) -> None:
    server = launch("--max-connections", "2")
    first, _ = await connect(server.url)
    second, _ = await connect(server.url)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(server.url)
    assert refused.value.response.status_code == 503
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    assert server.metric("ws_rejected_connections_total", 'reason="capacity"') == 1
    await first.close()
    third, _ = await connect(server.url)  # room again once one left
    await second.close()
    await third.close()


async def test_client_going_away_is_logged_with_its_code(launch: Launcher) -> None:
    server = launch()
    connection, welcome = await connect(server.url)
    await connection.close(1001)

    def logged() -> bool:
        return any(
            '"event":"close"' in line and welcome["conn"] in line and '"code":1001' in line
            for line in server.log().splitlines()
        )

    for _ in range(100):
        if logged():
            break
        await asyncio.sleep(0.05)
    assert logged(), server.log()
