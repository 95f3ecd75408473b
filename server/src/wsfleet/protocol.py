"""Parsing and validation of inbound frames, and encoding of outbound ones.

Pure functions only: no I/O, no clock, no state. Everything PROTOCOL.md says about
what a client may send lives here, so that the connection layer only dispatches
already-valid commands and the fuzz tests can exercise this module directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from wsfleet import codec

__all__ = [
    "ErrorCode",
    "Join",
    "Leave",
    "Limits",
    "Ping",
    "ProtocolError",
    "Publish",
    "compare_offsets",
    "echo_fields",
    "encode",
    "encode_error",
    "message_frame",
    "offset_key",
    "parse_frame",
    "parse_offset",
    "validate_publish_body",
]

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
OFFSET_PATTERN: Final = re.compile(r"(\d{1,20})-(\d{1,20})")
MAX_ID_LENGTH: Final = 256
MAX_EPOCH_LENGTH: Final = 64


class ErrorCode:
    """The error codes of PROTOCOL.md, as constants so that typos fail at import."""

    BAD_JSON: Final = "bad_json"
    BAD_MESSAGE: Final = "bad_message"
    UNKNOWN_TYPE: Final = "unknown_type"
    BAD_ROOM: Final = "bad_room"
    TOO_LARGE: Final = "too_large"
    FORBIDDEN: Final = "forbidden"
    RATE_LIMITED: Final = "rate_limited"
    TOO_MANY_ROOMS: Final = "too_many_rooms"
    UNSUPPORTED: Final = "unsupported"
    UNAVAILABLE: Final = "unavailable"


# Frame types a client may send; anything else is counted as "invalid" in metrics
# so that a hostile client cannot create unbounded label values.
CLIENT_TYPES: Final = frozenset({"join", "leave", "message", "ping"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits that validation depends on (the rest are enforced elsewhere)."""

    max_content_size: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class ProtocolError(Exception):
    """A frame that must be answered with an ``error`` frame.

    ``request_id`` and ``room`` echo the failing frame's fields when it had them.
    """

    code: str
    message: str
    request_id: str | int | float | None = None
    room: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: str | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str


@dataclass(frozen=True, slots=True)
class Publish:
    """A ``message`` frame; ``content_json`` is the content, encoded once, compact."""

    room: str
    content_json: bytes
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: str | int | float | None = None


Command = Join | Leave | Publish | Ping


def parse_offset(offset: str) -> tuple[int, int] | None:
    """Return an offset as the pair of integers it stands for, or None if malformed."""
    match = OFFSET_PATTERN.fullmatch(offset)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def offset_key(offset: str) -> tuple[int, int]:
    """A well-formed offset as the pair of integers that orders it."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


def compare_offsets(left: str, right: str) -> int:
    """Compare two well-formed offsets: negative, zero or positive like ``cmp``."""
    left_ms, _, left_seq = left.partition("-")
    right_ms, _, right_seq = right.partition("-")
    left_pair = (int(left_ms), int(left_seq or 0))
    right_pair = (int(right_ms), int(right_seq or 0))
    return (left_pair > right_pair) - (left_pair < right_pair)


def _echo_id(frame: dict[str, Any]) -> str | int | float | None:
    value = frame.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH and _is_encodable(value):
        return value
    if isinstance(value, int | float):
        return value
    return None


def _echo_room(frame: dict[str, Any]) -> str | None:
    value = frame.get("room")
    if isinstance(value, str) and len(value) <= 1024 and _is_encodable(value):
        return value
    return None


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates decoded from "\ud800" escapes
        return False
    return True


def _require_room(frame: dict[str, Any], fail: Any) -> str:
    room = frame.get("room")
    if room is None:
        raise fail(ErrorCode.BAD_MESSAGE, "missing field: room")
    if not isinstance(room, str):
        raise fail(ErrorCode.BAD_MESSAGE, "room must be a string")
    if ROOM_PATTERN.fullmatch(room) is None:
        raise fail(ErrorCode.BAD_ROOM, "room must match ^[A-Za-z0-9_.:-]{1,128}$")
    return room


def _brackets(text: str | bytes) -> int:
    if isinstance(text, str):
        return text.count("[") + text.count("{")
    return text.count(b"[") + text.count(b"{")


def parse_frame(text: str | bytes, limits: Limits) -> Command:
    """Turn one inbound text frame into a command, or raise :class:`ProtocolError`."""
    try:
        frame = codec.loads(text)
    except codec.DecodeError:
        raise ProtocolError(ErrorCode.BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frame must be a JSON object")

    request_id = _echo_id(frame)
    echo_room = _echo_room(frame)

    def fail(code: str, message: str) -> ProtocolError:
        return ProtocolError(code, message, request_id, echo_room)

    frame_type = frame.get("type")
    if frame_type is None:
        raise fail(ErrorCode.BAD_MESSAGE, "missing field: type")
    if not isinstance(frame_type, str):
        raise fail(ErrorCode.BAD_MESSAGE, "type must be a string")

    if frame_type == "message":
        raw_id = frame.get("id")
        if raw_id is not None and not (isinstance(raw_id, str) and raw_id == request_id):
            raise fail(ErrorCode.BAD_MESSAGE, f"id must be a string of at most {MAX_ID_LENGTH}")
        room = _require_room(frame, fail)
        if "content" not in frame:
            raise fail(ErrorCode.BAD_MESSAGE, "missing field: content")
        content = frame["content"]
        # Counting brackets is cheap; only a frame with many of them is walked.
        if _brackets(text) > codec.MAX_DEPTH and codec.depth_exceeds(content):
            raise fail(ErrorCode.BAD_MESSAGE, f"content nests deeper than {codec.MAX_DEPTH} levels")
        try:
            content_json = codec.dumps(content)
        except codec.EncodeError:
            raise fail(ErrorCode.BAD_MESSAGE, "content cannot be encoded as JSON") from None
        if len(content_json) > limits.max_content_size:
            raise fail(
                ErrorCode.TOO_LARGE,
                f"content is {len(content_json)} bytes, the limit is {limits.max_content_size}",
            )
        return Publish(room, content_json, raw_id)

    if frame_type == "join":
        room = _require_room(frame, fail)
        since = frame.get("since")
        epoch = frame.get("epoch")
        if since is not None and (not isinstance(since, str) or parse_offset(since) is None):
            raise fail(ErrorCode.BAD_MESSAGE, "since must be an offset string like 1-0")
        if epoch is not None and (
            not isinstance(epoch, str) or len(epoch) > MAX_EPOCH_LENGTH or not _is_encodable(epoch)
        ):
            raise fail(ErrorCode.BAD_MESSAGE, "epoch must be a short string")
        return Join(room, since, epoch)

    if frame_type == "leave":
        return Leave(_require_room(frame, fail))

    if frame_type == "ping":
        raw_id = frame.get("id")
        if raw_id is not None and raw_id != request_id:
            raise fail(ErrorCode.BAD_MESSAGE, "id must be a string or a number")
        return Ping(request_id)

    raise fail(ErrorCode.UNKNOWN_TYPE, f"unknown frame type: {frame_type[:64]!r}")


def echo_fields(text: str | bytes) -> tuple[str | int | float | None, str | None]:
    """The ``id`` and ``room`` of a frame that is refused before validation (rate limit)."""
    try:
        frame = codec.loads(text)
    except codec.DecodeError:
        return None, None
    if not isinstance(frame, dict):
        return None, None
    return _echo_id(frame), _echo_room(frame)


def encode(frame: dict[str, Any]) -> bytes:
    """Encode an outbound frame built by the server itself."""
    return codec.dumps(frame)


def encode_error(error: ProtocolError) -> bytes:
    """Encode an ``error`` frame, echoing ``id`` and ``room`` when the frame had them."""
    frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
    if error.request_id is not None:
        frame["id"] = error.request_id
    if error.room is not None:
        frame["room"] = error.room
    return codec.dumps(frame)


def message_frame(room: str, offset: str, sender_json: bytes, content_json: bytes) -> bytes:
    """Build a ``message`` frame from already-encoded parts.

    The Lua publish script builds the very same bytes on the Redis side (see
    ``lua/publish.lua``); history replay uses this function. The room name needs no
    escaping because :data:`ROOM_PATTERN` admits no JSON-special character.
    """
    ts = offset.partition("-")[0]
    return b"".join(
        (
            b'{"type":"message","room":"',
            room.encode(),
            b'","offset":"',
            offset.encode(),
            b'","from":',
            sender_json,
            b',"content":',
            content_json,
            b',"ts":',
            ts.encode(),
            b"}",
        )
    )


def validate_publish_body(body: bytes, limits: Limits) -> Publish:
    """Validate the JSON body of ``POST /api/publish`` with the rules of a ``message`` frame."""
    try:
        document = codec.loads(body)
    except codec.DecodeError:
        raise ProtocolError(ErrorCode.BAD_JSON, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "body must be a JSON object")
    document = {key: value for key, value in document.items() if key in ("room", "content")}
    document["type"] = "message"
    command = parse_frame(codec.dumps(document), limits)
    assert isinstance(command, Publish)
    return command
