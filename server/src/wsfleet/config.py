"""Settings of ``wsfleet serve``: command-line flags, ``WSFLEET_*`` variables, a TOML file.

Every setting has one name, used three ways: ``--history-size`` on the command line,
``WSFLEET_HISTORY_SIZE`` in the environment and ``history_size`` (or
``history-size``) in the TOML file given by ``--config``. Precedence: flag > env >
TOML > default. A bad value stops the program at start with a message that names
the flag and where the value came from. Secrets can come from files
(``--jwt-secret-file``) so that systemd deployments keep them out of the
environment and the process list; no secret is ever printed.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["OPTIONS", "ConfigError", "Option", "Settings", "add_arguments", "load_settings"]

ENV_PREFIX = "WSFLEET_"


class ConfigError(ValueError):
    """A setting has a bad value; the message names the flag and the source."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration of one server instance (see :data:`OPTIONS` for meanings)."""

    host: str = "127.0.0.1"
    port: int = 8765
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str | None = field(default=None, repr=False)
    redis_cluster: tuple[tuple[str, int], ...] = ()  # (host, port) seeds; () means single mode
    redis_username: str | None = None
    publish_replicas: int = 0
    publish_replicas_timeout: float = 1.0
    instance_id: str = ""
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    api_key: str | None = field(default=None, repr=False)
    allowed_origins: tuple[str, ...] = ()
    history_size: int = 1000
    history_ttl: float = 600.0
    max_connections: int = 0
    drain_timeout: float = 30.0
    drain_spread: float = 5.0
    max_frame_size: int = 64 * 1024
    max_content_size: int = 16 * 1024
    max_rooms: int = 100
    rate_limit: float = 50.0
    rate_burst: int = 100
    queue_bytes: int = 1024 * 1024
    queue_messages: int = 1000
    publish_queue: int = 1024
    shed_lag: float = 0.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    compression: bool = False
    log_format: str = "json"
    log_level: str = "info"

    @property
    def history_enabled(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict fit for a log line: secrets replaced by whether they are set."""
        shown: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in SECRET_NAMES:
                shown[spec.name] = "set" if value else "unset"
            elif spec.name == "redis_url":
                shown[spec.name] = redact_url(value)
            elif spec.name == "redis_cluster":
                shown[spec.name] = [f"{host}:{port}" for host, port in value]
            elif isinstance(value, tuple):
                shown[spec.name] = list(value)
            else:
                shown[spec.name] = value
        return shown


SECRET_NAMES = frozenset({"jwt_secret", "api_key", "redis_password"})


def redact_url(url: str) -> str:
    """Hide the password of a URL such as ``redis://:secret@host``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# Converters: each takes a raw value (a string from the command line or environment,
# or a typed TOML value) and returns the typed value or raises ValueError.


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not an integer")
        if isinstance(raw, int):
            value = raw
        else:
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{raw!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"{value} is out of range (must be {bound})")
        return value

    return convert


def _number(minimum: float, *, strictly_above: bool = False) -> Callable[[Any], float]:
    def convert(raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError(f"{raw!r} is not a number")
        try:
            value = float(raw) if isinstance(raw, int | float) else float(str(raw).strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a number (seconds)") from None
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a finite number")
        if value < minimum or (strictly_above and value == minimum):
            relation = ">" if strictly_above else ">="
            raise ValueError(f"{value} is out of range (must be {relation} {minimum})")
        return value

    return convert


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a string")
    return raw


def _non_empty_text(raw: Any) -> str:
    value = _text(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


class WeakSecret(ValueError):
    """A secret too short to be safe; the message never contains the secret."""


# HS256 keys shorter than its 256-bit output can be brute-forced offline from one token.
MIN_JWT_SECRET_BYTES = 32


def _jwt_secret(raw: Any) -> str:
    value = _non_empty_text(raw)
    length = len(value.encode("utf-8"))
    if length < MIN_JWT_SECRET_BYTES:
        raise WeakSecret(
            f"too weak: {length} bytes, at least {MIN_JWT_SECRET_BYTES} are needed for HS256"
            " (e.g. `openssl rand -hex 32`)"
        )
    return value


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    lowered = str(raw).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not a boolean (true/false)")


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(raw: Any) -> str:
        value = _text(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return convert


def _origins(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else _text(raw).split(",")
    origins = tuple(str(item).strip().rstrip("/") for item in items if str(item).strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{origin!r} is not an origin like https://example.com")
    return origins


def _redis_url(raw: Any) -> str:
    value = _non_empty_text(raw)
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{redact_url(value)!r} is not a redis://, rediss:// or unix:// URL")
    return value


def _cluster_nodes(raw: Any) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (or a TOML list of ``host:port``): the cluster's seed nodes."""
    items = raw if isinstance(raw, list) else _text(raw).split(",")
    nodes: list[tuple[str, int]] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        host, sep, port_text = text.rpartition(":")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [::1]:7000
        if not sep or not host or not port_text.strip().isdigit():
            raise ValueError(f"{text!r} is not host:port (e.g. 10.0.0.5:6379)")
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError(f"{text!r}: port {port} is out of range (must be between 1 and 65535)")
        nodes.append((host, port))
    if not nodes:
        raise ValueError("must list at least one host:port")
    return tuple(nodes)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its flag name, how to convert it and its help text."""

    name: str
    convert: Callable[[Any], Any]
    help: str
    secret_file: bool = False  # also accepts --NAME-file with the value inside a file

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", _non_empty_text, "address to listen on (default 127.0.0.1)"),
    Option("port", _integer(0, 65535), "TCP port to listen on (default 8765)"),
    Option("redis_url", _redis_url, "Redis URL (default redis://127.0.0.1:6379/0)"),
    Option(
        "redis_password",
        _text,
        "Redis password, if not in the URL (prefer --redis-password-file)",
        secret_file=True,
    ),
    Option(
        "redis_cluster",
        _cluster_nodes,
        "Redis/Valkey Cluster seed nodes host:port,host:port (sharded pub/sub); "
        "instead of --redis-url",
    ),
    Option(
        "redis_username",
        _non_empty_text,
        "Redis ACL user for --redis-cluster (single mode: put it in --redis-url)",
    ),
    Option(
        "publish_replicas",
        _integer(0),
        "acknowledge a publish only once WAIT confirms it on this many replicas (default 0)",
    ),
    Option(
        "publish_replicas_timeout",
        _number(0, strictly_above=True),
        "seconds WAIT may take before the publisher gets `unavailable` (default 1)",
    ),
    Option("instance_id", _non_empty_text, "name of this instance (default HOST:PORT)"),
    Option(
        "jwt_secret",
        _jwt_secret,
        "HS256 secret, at least 32 bytes; when set, /ws requires ?token=JWT "
        "(prefer --jwt-secret-file)",
        secret_file=True,
    ),
    Option("jwt_audience", _non_empty_text, "required `aud` of tokens (default: not checked)"),
    Option("jwt_issuer", _non_empty_text, "required `iss` of tokens (default: not checked)"),
    Option(
        "api_key",
        _non_empty_text,
        "key for POST /api/publish; unset disables it (prefer --api-key-file)",
        secret_file=True,
    ),
    Option(
        "allowed_origins",
        _origins,
        "comma-separated Origin allow-list, e.g. https://a.example,https://b.example",
    ),
    Option("history_size", _integer(0), "messages kept per room (default 1000; 0: no history)"),
    Option("history_ttl", _number(0), "seconds a room's history lives (default 600; 0: none)"),
    Option("max_connections", _integer(0), "connection limit of this instance (0: no limit)"),
    Option("drain_timeout", _number(0, strictly_above=True), "seconds to drain (default 30)"),
    Option("drain_spread", _number(0), "seconds over which reconnects are spread (default 5)"),
    Option("max_frame_size", _integer(256), "largest inbound frame in bytes (default 65536)"),
    Option("max_content_size", _integer(1), "largest encoded content in bytes (default 16384)"),
    Option("max_rooms", _integer(1), "rooms per connection (default 100)"),
    Option("rate_limit", _number(0, strictly_above=True), "inbound frames per second (50)"),
    Option("rate_burst", _integer(1), "inbound burst size (default 100)"),
    Option("queue_bytes", _integer(1024), "outbound queue limit in bytes (default 1 MiB)"),
    Option("queue_messages", _integer(1), "outbound queue limit in messages (default 1000)"),
    Option(
        "publish_queue",
        _integer(1),
        "publishes of this instance waiting for Redis beyond which new ones are "
        "refused with `unavailable` (overload shedding; default 1024)",
    ),
    Option(
        "shed_lag",
        _number(0),
        "seconds of event-loop lag (smoothed) above which publishes are refused with "
        "`unavailable` until it falls (overload shedding; default 0: off)",
    ),
    Option("ping_interval", _number(0, strictly_above=True), "seconds between pings (20)"),
    Option("ping_timeout", _number(0, strictly_above=True), "seconds to wait for a pong (20)"),
    Option("compression", _boolean, "enable permessage-deflate (default off: ~50 KiB/conn)"),
    Option("log_format", _choice("json", "text"), "log line format: json (default) or text"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "log level (info)"),
)

_OPTION_BY_KEY: dict[str, Option] = {}
for _option in OPTIONS:
    _OPTION_BY_KEY[_option.name] = _option
    _OPTION_BY_KEY[_option.name.replace("_", "-")] = _option
    if _option.secret_file:
        _OPTION_BY_KEY[_option.name + "_file"] = _option
        _OPTION_BY_KEY[_option.name.replace("_", "-") + "-file"] = _option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per option to ``parser`` (defaults stay None)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file with settings (also {ENV_PREFIX}CONFIG); keys like history_size",
    )
    for option in OPTIONS:
        if option.convert is _boolean:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{option.help} [{option.env}]",
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.name,
            metavar=option.name.upper(),
            help=f"{option.help} [{option.env}]",
        )
        if option.secret_file:
            parser.add_argument(
                option.flag + "-file",
                dest=option.name + "_file",
                metavar="FILE",
                help=f"read {option.flag} from FILE [{option.env}_FILE]",
            )


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read --config file {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config file {path!r} is not valid TOML: {exc}") from None
    # Allow the settings either at top level or under a [serve] table.
    table = document.get("serve", document)
    if not isinstance(table, dict):
        raise ConfigError(f"--config file {path!r}: [serve] must be a table")
    for key in table:
        if key not in _OPTION_BY_KEY:
            raise ConfigError(f"--config file {path!r}: unknown setting {key!r}")
    return {key.replace("-", "_"): value for key, value in table.items()}


def _read_secret_file(path: Any, flag: str, source: str) -> str:
    try:
        text = Path(str(path)).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {flag}-file {str(path)!r} (from {source}): {exc.strerror}"
        ) from None
    # Files written by `echo` or editors end with a newline that is not part of the secret.
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{flag}-file {str(path)!r} (from {source}) is empty")
    return value


def _lookup(
    key: str, cli: Mapping[str, Any], env: Mapping[str, str], toml: Mapping[str, Any]
) -> tuple[Any, str] | None:
    """Find a raw value by precedence: flag > env > TOML. Returns (value, source)."""
    if cli.get(key) is not None:
        return cli[key], "--" + key.replace("_", "-")
    env_name = ENV_PREFIX + key.upper()
    if env_name in env:
        return env[env_name], env_name
    if key in toml:
        return toml[key], "config file"
    return None


def load_settings(
    cli: Mapping[str, Any] | argparse.Namespace,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from parsed flags, the environment and the optional TOML file."""
    cli_values = vars(cli) if isinstance(cli, argparse.Namespace) else dict(cli)
    env = os.environ if environ is None else environ
    config_path = cli_values.get("config") or env.get(ENV_PREFIX + "CONFIG")
    toml = _read_toml(config_path) if config_path else {}

    values: dict[str, Any] = {}
    for option in OPTIONS:
        found = _lookup(option.name, cli_values, env, toml)
        if option.secret_file:
            found_file = _lookup(option.name + "_file", cli_values, env, toml)
            if found_file is not None:
                if found is not None:
                    raise ConfigError(
                        f"{option.flag} and {option.flag}-file are both set; give only one"
                    )
                path, source = found_file
                found = _read_secret_file(path, option.flag, source), source
        if found is None:
            continue
        raw, source = found
        try:
            values[option.name] = option.convert(raw)
        except ValueError as exc:
            # Never echo the value of a secret, not even a malformed one.
            weak_or_not_secret = isinstance(exc, WeakSecret) or option.name not in SECRET_NAMES
            reason = str(exc) if weak_or_not_secret else "malformed secret"
            raise ConfigError(
                f"invalid value for {option.flag} (from {source}): {reason}"
            ) from None

    if "redis_url" in values and "redis_cluster" in values:
        url_source = _lookup("redis_url", cli_values, env, toml)
        cluster_source = _lookup("redis_cluster", cli_values, env, toml)
        raise ConfigError(
            "--redis-url (from {}) and --redis-cluster (from {}) are both set; give only one: "
            "--redis-url for one Redis, --redis-cluster for a Redis Cluster".format(
                url_source[1] if url_source else "?", cluster_source[1] if cluster_source else "?"
            )
        )
    settings = Settings(**values)
    if not settings.instance_id:
        settings = replace(settings, instance_id=default_instance_id(settings.host, settings.port))
    return settings


def default_instance_id(host: str, port: int) -> str:
    """``host:port``; a wildcard address says nothing, so the hostname stands in for it."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"


def describe_options() -> Sequence[tuple[str, str, str]]:
    """(flag, env var, help) for every option; the README table is built from this."""
    return [(option.flag, option.env, option.help) for option in OPTIONS]
