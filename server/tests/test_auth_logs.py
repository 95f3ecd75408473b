"""Tokens: optional ``aud``/``iss`` checks and close 4001 when a token expires while
connected. Logs: strings from clients (close reasons, a token's ``sub``) cannot forge
a log line in either format."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import time

import jwt
import pytest
import websockets

from conftest import Launcher, connect, join, unique_room, wait_until
from wsfleet.logs import JsonFormatter, TextFormatter, log_event

SECRET = "a-test-secret-of-at-least-32-bytes-for-hs256"
FORGED = "\n2026-01-01 00:00:00,000 INFO wsfleet.session: connection open forged=yes"


def token(exp_in: float = 300, **claims: object) -> str:
    body: dict[str, object] = {"sub": "alice", "exp": int(time.time() + exp_in), **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


async def refused(url: str) -> int:
    with pytest.raises(websockets.InvalidStatus) as error:
        await websockets.connect(url)
    return error.value.response.status_code


async def test_audience_and_issuer_are_checked_when_configured(launch: Launcher) -> None:
    server = launch("--jwt-secret", SECRET, "--jwt-audience", "chat", "--jwt-issuer", "idp")
    good = token(aud="chat", iss="idp")
    connection, _ = await connect(f"{server.url}?token={good}")
    await connection.close()
    for bad in (
        token(),
        token(aud="other", iss="idp"),
        token(aud="chat", iss="other"),
        token(aud="chat"),
    ):
        assert await refused(f"{server.url}?token={bad}") == 401
    # Not configured: not checked (a token may carry claims for other services).
    plain = launch("--jwt-secret", SECRET)
    connection, _ = await connect(f"{plain.url}?token={token(aud='x', iss='y')}")
    await connection.close()


async def test_connection_closed_4001_when_its_token_expires(launch: Launcher) -> None:
    server = launch("--jwt-secret", SECRET)
    short, _ = await connect(f"{server.url}?token={token(exp_in=2)}")
    long_lived, _ = await connect(f"{server.url}?token={token(exp_in=300)}")
    await join(short, unique_room())
    started = time.monotonic()
    with contextlib.suppress(websockets.ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in short:
                pass
    assert short.close_code == 4001
    assert short.close_reason == "token expired"
    assert time.monotonic() - started < 4
    await long_lived.ping()  # the others stay
    await long_lived.close()


def record(message: str, **fields: object) -> logging.LogRecord:
    logger = logging.getLogger("wsfleet.test")
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = captured.append  # type: ignore[method-assign,assignment]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(logger, logging.INFO, message, **fields)
    finally:
        logger.removeHandler(handler)
    return captured[0]


HOSTILE = ["bye" + FORGED, "\r\x1b[2Kfake", "a\u2028b", "x=y z=w", 'q"uote', "\x00", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_text_and_json_lines_stay_one_line_per_record(value: str) -> None:
    item = record("connection closed", reason=value, user=value, code=1000)
    text = TextFormatter().format(item)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\u2028" not in text
    # Each field reads back exactly: a plain word as is, anything else as a JSON string.
    assert " code=1000" in text
    shown = text.split(" reason=", 1)[1].split(" user=", 1)[0]
    assert (json.loads(shown) if shown.startswith('"') else shown) == value
    line = JsonFormatter().format(item)
    assert "\n" not in line and "\r" not in line
    assert json.loads(line)["reason"] == value


def test_a_traceback_is_indented_so_no_line_looks_like_a_record() -> None:
    try:
        raise ValueError("boom" + FORGED)
    except ValueError:
        item = record("connection handler failed")
        item.exc_info = sys.exc_info()
    text = TextFormatter().format(item)
    lines = text.splitlines()
    assert lines[0].endswith("connection handler failed")
    assert all(line.startswith("  | ") for line in lines[1:])


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_client_strings_cannot_forge_server_log_lines(
    launch: Launcher, log_format: str
) -> None:
    server = launch("--jwt-secret", SECRET, "--log-format", log_format)
    sub = "mallory" + FORGED
    connection, _ = await connect(f"{server.url}?token={token(sub=sub)}")
    await connection.close(code=1000, reason="bye" + FORGED)
    wait_until(lambda: "connection closed" in server.log(), "the close log line")
    lines = server.log().splitlines()
    assert not any("forged=yes" in line and line.startswith("2026-01-01") for line in lines)
    if log_format == "json":
        records = [json.loads(line) for line in lines]
        assert any(r.get("user") == sub for r in records)
        assert any(r.get("reason") == "bye" + FORGED for r in records)
    else:
        stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
        assert all(stamp.match(line) or line.startswith("  | ") for line in lines), lines
