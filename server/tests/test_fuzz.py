"""Property-based fuzzing of inbound frames: never a crash, always an ``error`` or a
valid answer, and the connection stays usable."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ServerProcess, connect, recv_json
from wsfleet.protocol import ErrorCode, Limits, ProtocolError, parse_frame

ERROR_CODES = {value for name, value in vars(ErrorCode).items() if name.isupper()}
ANSWERS = {"joined", "left", "ack", "pong", "error"}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
room_names = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True), st.text(max_size=30), json_values
)
frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["join", "leave", "message", "ping", "nope"])},
        optional={
            "room": room_names,
            "content": json_values,
            "id": json_values,
            "since": st.one_of(
                st.from_regex(r"[0-9]{1,14}-[0-9]{1,3}", fullmatch=True), json_values
            ),
            "epoch": json_values,
        },
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=40),
)


@given(
    st.text(max_size=200) | st.binary(max_size=200) | frames.filter(lambda f: isinstance(f, str))
)
def test_parse_frame_only_raises_protocol_errors(frame: str | bytes) -> None:
    outcome: object
    try:
        outcome = parse_frame(frame, Limits(max_content_size=64))
    except ProtocolError as error:
        outcome = error.code
    assert not isinstance(outcome, str) or outcome in ERROR_CODES


@pytest.fixture(scope="module")
def fuzz_server(cluster: list[ServerProcess]) -> ServerProcess:
    return cluster[0]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(frames, min_size=1, max_size=8))
def test_every_frame_gets_an_error_or_a_valid_answer(
    fuzz_server: ServerProcess, batch: list[Any]
) -> None:
    asyncio.run(_exchange(fuzz_server, batch))


async def _exchange(server: ServerProcess, batch: list[str | bytes]) -> None:
    connection, _ = await connect(server.url)
    for frame in batch:
        await connection.send(frame)
        while True:  # room messages may interleave; each frame gets exactly one answer
            answer = await recv_json(connection)
            if answer["type"] != "message":
                break
        assert answer["type"] in ANSWERS, answer
        if answer["type"] == "error":
            assert answer["code"] in ERROR_CODES
            assert isinstance(answer["message"], str)
    await connection.send('{"type":"ping","id":"end"}')
    while (answer := await recv_json(connection))["type"] == "message":
        pass
    assert answer == {"type": "pong", "id": "end"}
    await connection.close()
    assert connection.close_code == 1000
