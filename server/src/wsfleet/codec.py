"""JSON encoding and decoding, with orjson when it is installed.

The server encodes every outbound frame to UTF-8 bytes exactly once, so the codec
always produces ``bytes``. Both backends produce compact JSON, refuse what is not
JSON (NaN, infinities, numbers too large for a double such as ``1e999``, lone
surrogates) and give the same values (PROTOCOL.md: ``content`` is relayed as sent):

- integers of any size, exactly: orjson reads integers beyond 64 bits as floats and
  cannot write them, so a document with a run of 19 or more digits is read, and a
  value orjson cannot write is written, by the standard library instead;
- floats as IEEE 754 doubles, written as the shortest text that reads back as the
  same double;
- strings as Unicode, written as UTF-8 (not ``\\u`` escapes).

Nesting: :data:`MAX_DEPTH` levels of arrays and objects in a frame are accepted
(:func:`depth_exceeds`); deeper ones are refused by the protocol layer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKEND",
    "BACKENDS",
    "MAX_DEPTH",
    "Backend",
    "DecodeError",
    "EncodeError",
    "depth_exceeds",
    "dumps",
    "loads",
]

# Levels of nested arrays and objects a frame may have (the frame object is one).
MAX_DEPTH = 64


class DecodeError(ValueError):
    """The input is not one valid JSON document."""


class EncodeError(ValueError):
    """The value cannot be represented as JSON (e.g. NaN or a lone surrogate)."""


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DecodeError(f"number {text[:32]} is out of range for a double")
    return value


def _stdlib_loads(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
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


# 19 digits in a row may be an integer outside orjson's 64-bit range (or inside a
# string: then the standard library reads it, with the same result).
_LONG_DIGITS_BYTES = re.compile(rb"\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{19}")


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    loads: Callable[[bytes | str], Any]
    dumps: Callable[[Any], bytes]


def _orjson_backend() -> Backend | None:
    try:
        import orjson
    except ImportError:
        return None

    orjson_loads = orjson.loads
    orjson_dumps = orjson.dumps
    orjson_decode_error = orjson.JSONDecodeError
    orjson_encode_error = orjson.JSONEncodeError

    def fast_loads(data: bytes | str) -> Any:
        digits = _LONG_DIGITS_BYTES if isinstance(data, bytes | bytearray) else _LONG_DIGITS_TEXT
        if digits.search(data):  # type: ignore[arg-type]
            return _stdlib_loads(data)
        try:
            return orjson_loads(data)
        except orjson_decode_error as exc:
            raise DecodeError(str(exc)) from None

    def fast_dumps(value: Any) -> bytes:
        try:
            encoded: bytes = orjson_dumps(value)
        except orjson_encode_error as exc:
            # Integers beyond 64 bits, or nesting deeper than orjson writes (254
            # levels): the standard library writes both; it refuses the rest too.
            if "Integer" in str(exc) or "Recursion" in str(exc):
                return _stdlib_dumps(value)
            raise EncodeError(str(exc)) from None
        return encoded

    return Backend("orjson", fast_loads, fast_dumps)


STDLIB = Backend("json", _stdlib_loads, _stdlib_dumps)
_fast = _orjson_backend()
# Every backend this installation has, by name: the tests check that they agree.
BACKENDS: dict[str, Backend] = {"json": STDLIB} | ({} if _fast is None else {"orjson": _fast})
_chosen = _fast or STDLIB
BACKEND, loads, dumps = _chosen.name, _chosen.loads, _chosen.dumps
stdlib_loads = _stdlib_loads
stdlib_dumps = _stdlib_dumps


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``value`` nests arrays and objects more than ``limit`` levels deep."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
