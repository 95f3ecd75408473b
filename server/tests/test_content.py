"""``content`` is relayed unchanged whatever the JSON backend (PROTOCOL.md): integers
of any size, floats, Unicode and nesting up to ``codec.MAX_DEPTH`` levels.

The property tests run the protocol's own parsing against every backend this
installation has (the standard library always, orjson with ``[fast]``); the end-to-end
tests relay through real servers, one with orjson and one without.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Launcher, connect, join, publish, recv_json, recv_type, send_json, unique_room
from wsfleet import codec
from wsfleet.protocol import Limits, ProtocolError, Publish, parse_frame

LIMITS = Limits(max_content_size=1 << 20)

# Every JSON value: integers of any size, finite floats, any Unicode text (no lone
# surrogates: they are not Unicode), arrays and objects.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), children, max_size=5)
    ),
    max_leaves=30,
)


def same(left: Any, right: Any) -> bool:
    """Equal as JSON values, strictly: 1 is not 1.0, -0.0 is not 0.0, order of arrays kept."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return struct.pack("!d", left) == struct.pack("!d", right)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    return bool(left == right)


@contextlib.contextmanager
def backend(name: str) -> Iterator[codec.Backend]:
    """Make the protocol layer use one backend for a while."""
    chosen = codec.BACKENDS[name]
    saved = codec.loads, codec.dumps
    codec.loads, codec.dumps = chosen.loads, chosen.dumps
    try:
        yield chosen
    finally:
        codec.loads, codec.dumps = saved


def test_this_installation_has_both_backends() -> None:
    # The dev install includes [fast]: without orjson half of these tests would not run.
    assert set(codec.BACKENDS) == {"json", "orjson"}


@settings(max_examples=300, deadline=None)
@given(content=json_values, ascii_only=st.booleans())
def test_every_backend_relays_content_unchanged_and_they_agree(
    content: Any, ascii_only: bool
) -> None:
    sent = json.dumps({"type": "message", "room": "r", "content": content}, ensure_ascii=ascii_only)
    relayed: dict[str, bytes] = {}
    for name in codec.BACKENDS:
        with backend(name):
            command = parse_frame(sent, LIMITS)
        assert isinstance(command, Publish)
        relayed[name] = command.content_json
        # What a client's JSON parser reads from the relayed frame is what was sent.
        received = json.loads(command.content_json)
        assert same(received, content), (name, command.content_json)
        for other in codec.BACKENDS.values():
            assert same(other.loads(command.content_json), content), (name, other.name)
    decoded = [json.loads(value) for value in relayed.values()]
    assert all(same(value, decoded[0]) for value in decoded)


@pytest.mark.parametrize("name", ["json", "orjson"])
def test_limits_are_the_same_for_every_backend(name: str) -> None:
    with backend(name) as chosen:
        deepest = "[" * codec.MAX_DEPTH + "]" * codec.MAX_DEPTH
        command = parse_frame(f'{{"type":"message","room":"r","content":{deepest}}}', LIMITS)
        assert isinstance(command, Publish) and command.content_json == deepest.encode()
        with pytest.raises(ProtocolError, match="deeper than") as too_deep:
            parse_frame(f'{{"type":"message","room":"r","content":[{deepest}]}}', LIMITS)
        assert too_deep.value.code == "bad_message"
        for out_of_range in ("1e999", "-1e999", "1E400"):
            with pytest.raises(codec.DecodeError):
                chosen.loads(out_of_range)
        assert chosen.loads("123456789012345678901234567890") == 123456789012345678901234567890
        assert chosen.dumps(-(2**200)) == str(-(2**200)).encode()
        assert chosen.dumps("é\u2028😀") == '"é\u2028😀"'.encode()
        assert math.isclose(chosen.loads("1e-400"), 0.0)


def without_orjson(directory: Path) -> dict[str, str]:
    """Environment for a server process in which ``import orjson`` fails."""
    blocker = directory / "no-orjson"
    blocker.mkdir(exist_ok=True)
    (blocker / "orjson.py").write_text("raise ImportError('orjson disabled for this test')\n")
    return {"PYTHONPATH": str(blocker)}


CONTENTS: list[Any] = [
    123456789012345678901234567890,
    -(2**70),
    18446744073709551616,
    0.1,
    1e300,
    -0.0,
    1.0,
    'héllo \u2028 😀 \x00 "quoted"',
    {"nested": [[[[{"deep": [1, 2.5, None, True]}]]]]},
    [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]],
]


@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "json"])
async def test_servers_relay_content_unchanged(
    launch: Launcher, tmp_path: Path, with_orjson: bool
) -> None:
    server = launch(env=None if with_orjson else without_orjson(tmp_path))
    room = unique_room("content")
    reader, _ = await connect(server.url)
    await join(reader, room)
    writer, _ = await connect(server.url)
    for n, content in enumerate(CONTENTS):
        assert (await publish(writer, room, content, str(n)))["type"] == "ack"
        relayed = await recv_type(reader, "message")
        assert same(relayed["content"], content), (content, relayed["content"])

    # A number no double holds is refused with an error frame; the connection stays.
    await send_json(writer, {"type": "ping", "id": 7})
    await writer.send('{"type":"ping","id":1e999}')
    assert (await recv_json(writer))["type"] == "pong"
    answer = await recv_json(writer)
    assert (answer["type"], answer["code"]) == ("error", "bad_json")
    await send_json(writer, {"type": "ping", "id": 8})
    assert await recv_json(writer) == {"type": "pong", "id": 8}
    await reader.close()
    await writer.close()
