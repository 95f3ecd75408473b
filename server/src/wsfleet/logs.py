"""Log set-up: one JSON object per line by default, or plain text for people.

Structured fields are passed with ``extra={"fields": {...}}`` and become top-level
keys of the JSON line. Nothing here knows any secret; callers pass only ids,
addresses and counts (see :meth:`wsfleet.config.Settings.redacted`).

Some fields come from clients (a close reason, a token's ``sub``); neither format
lets them forge a log line. JSON escapes every control character. The text format
prints a field that is not a plain word as a JSON string (ASCII, escaped), escapes
control characters in the message, and indents every line of a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

from wsfleet import codec

__all__ = ["configure_logging", "log_event"]

LOGGER_NAME = "wsfleet"


class JsonFormatter(logging.Formatter):
    """Format a record as one compact JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return codec.dumps(line).decode("utf-8")
        except codec.EncodeError:
            return codec.dumps(
                {"ts": line["ts"], "level": line["level"], "msg": repr(line)}
            ).decode()


# Characters that could end a line, hide text on a terminal or break key=value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _escape_control(text: str) -> str:
    return _CONTROL.sub(lambda match: json.dumps(match.group())[1:-1], text)


def _text_value(value: Any) -> str:
    if value is None or isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, str) and _PLAIN_WORD.fullmatch(value):
        return value
    if isinstance(value, str):
        return json.dumps(value)  # quoted, every non-ASCII and control character escaped
    return json.dumps(value, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable lines: time, level, message, then key=value fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = (
            f"{self.formatTime(record)} {record.levelname} {record.name}: "
            f"{_escape_control(record.getMessage())}"
        )
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(
                f"{_escape_control(str(key))}={_text_value(value)}" for key, value in fields.items()
            )
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            text += "".join("\n  | " + _escape_control(line) for line in trace.splitlines())
        return text


def configure_logging(log_format: str, level: str) -> None:
    """Send all logs to stderr in the chosen format (journald adds its own timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # websockets logs every handshake at INFO; the server writes its own single
    # open/close line per connection, so only its warnings are kept.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


def log_event(logger: logging.Logger, level: int, message: str, /, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (ids, counts, codes; never secrets)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
