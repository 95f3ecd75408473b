"""Pure logic of frame parsing and encoding (unit tests)."""

from __future__ import annotations

import json

import pytest

from wsfleet import codec
from wsfleet.protocol import (
    Join,
    Limits,
    Ping,
    ProtocolError,
    Publish,
    compare_offsets,
    encode_error,
    message_frame,
    parse_frame,
    validate_publish_body,
)

LIMITS = Limits(max_content_size=32)


def test_valid_frames_become_commands() -> None:
    assert parse_frame('{"type":"join","room":"a.b:c-d_e"}', LIMITS) == Join("a.b:c-d_e")
    assert parse_frame('{"type":"join","room":"r","since":"12-3","epoch":"e"}', LIMITS) == Join(
        "r", "12-3", "e"
    )
    assert parse_frame('{"type":"ping","id":7}', LIMITS) == Ping(7)
    command = parse_frame('{"type":"message","room":"r","content":{"a": [1, 2]},"id":"m"}', LIMITS)
    assert command == Publish("r", b'{"a":[1,2]}', "m")


def test_content_size_is_measured_after_encoding() -> None:
    assert isinstance(
        parse_frame(json.dumps({"type": "message", "room": "r", "content": "x" * 30}), LIMITS),
        Publish,
    )
    with pytest.raises(ProtocolError) as error:
        parse_frame(json.dumps({"type": "message", "room": "r", "content": "x" * 31}), LIMITS)
    assert error.value.code == "too_large"


@pytest.mark.parametrize(
    "text", ["NaN", '{"type":"ping","id":1e999}', "[" * 5000 + "]" * 5000, '"\\ud800"']
)
def test_non_json_values_are_bad_json_or_bad_message(text: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_frame(text, LIMITS)
    assert error.value.code in ("bad_json", "bad_message")


def test_stdlib_codec_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(codec.DecodeError):
        codec.stdlib_loads("NaN")
    with pytest.raises(codec.EncodeError):
        codec.stdlib_dumps(float("nan"))
    assert codec.stdlib_dumps({"a": "é"}) == '{"a":"é"}'.encode()


def test_offsets_compare_as_pairs_of_integers() -> None:
    assert compare_offsets("9-0", "10-0") < 0
    assert compare_offsets("10-2", "10-10") < 0
    assert compare_offsets("10-10", "10-10") == 0
    assert compare_offsets("11-0", "10-99") > 0


def test_message_frame_is_valid_json_with_every_field() -> None:
    frame = json.loads(message_frame("r", "1700000000123-4", b'"alice"', b'{"x":1}'))
    assert frame == {
        "type": "message",
        "room": "r",
        "offset": "1700000000123-4",
        "from": "alice",
        "content": {"x": 1},
        "ts": 1700000000123,
    }


def test_error_frame_echoes_id_and_room() -> None:
    encoded = encode_error(ProtocolError("forbidden", "no", "id-1", "room-1"))
    assert json.loads(encoded) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "id": "id-1",
        "room": "room-1",
    }


def test_publish_body_ignores_other_fields_and_validates_like_a_frame() -> None:
    assert validate_publish_body(b'{"room":"r","content":1,"type":"join"}', LIMITS) == Publish(
        "r", b"1", None
    )
    with pytest.raises(ProtocolError):
        validate_publish_body(b'{"room":"r"}', LIMITS)
