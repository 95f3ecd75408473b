"""JSON encoding and decoding, with orjson when it is installed.

The server encodes every outbound frame to UTF-8 bytes exactly once, so the codec
always produces ``bytes``. Both backends produce compact JSON and refuse values that
are not JSON (NaN, infinities), so what the server stores and relays is always valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BACKEND", "DecodeError", "EncodeError", "dumps", "loads"]


class DecodeError(ValueError):
    """The input is not one valid JSON document."""


class EncodeError(ValueError):
    """The value cannot be represented as JSON (e.g. NaN or a lone surrogate)."""


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not valid JSON")


def _stdlib_loads(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except (ValueError, RecursionError, TypeError) as exc:
        raise DecodeError(str(exc)) from None


_stdlib_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
)


def _stdlib_dumps(value: Any) -> bytes:
    try:
        return _stdlib_encoder.encode(value).encode("utf-8")
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError) as exc:
        raise EncodeError(str(exc)) from None


def _load_backend() -> tuple[str, Callable[[bytes | str], Any], Callable[[Any], bytes]]:
    try:
        import orjson
    except ImportError:
        return "json", _stdlib_loads, _stdlib_dumps

    orjson_loads = orjson.loads
    orjson_dumps = orjson.dumps
    orjson_decode_error = orjson.JSONDecodeError
    orjson_encode_error = orjson.JSONEncodeError

    def fast_loads(data: bytes | str) -> Any:
        try:
            return orjson_loads(data)
        except orjson_decode_error as exc:
            raise DecodeError(str(exc)) from None

    def fast_dumps(value: Any) -> bytes:
        # orjson refuses nesting deeper than 254 levels, which the parser accepts.
        try:
            encoded: bytes = orjson_dumps(value)
        except orjson_encode_error as exc:
            raise EncodeError(str(exc)) from None
        return encoded

    return "orjson", fast_loads, fast_dumps


BACKEND, loads, dumps = _load_backend()
stdlib_loads = _stdlib_loads
stdlib_dumps = _stdlib_dumps
