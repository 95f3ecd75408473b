"""Settings: precedence flag > env > TOML > default, clear errors, secrets from files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wsfleet.config import ConfigError, load_settings, redact_url


def test_defaults_match_the_protocol() -> None:
    settings = load_settings({}, {})
    assert (settings.history_size, settings.history_ttl) == (1000, 600.0)
    assert (settings.queue_bytes, settings.queue_messages) == (1024 * 1024, 1000)
    assert (settings.rate_limit, settings.rate_burst, settings.max_rooms) == (50.0, 100, 100)
    assert (settings.max_frame_size, settings.max_content_size) == (65536, 16384)
    assert (settings.drain_timeout, settings.drain_spread) == (30.0, 5.0)
    assert settings.compression is False
    assert settings.instance_id == "127.0.0.1:8765"


def test_precedence_flag_then_env_then_toml(tmp_path: Path) -> None:
    toml = tmp_path / "wsfleet.toml"
    toml.write_text(
        'history_size = 10\nhistory-ttl = 5\nport = 9000\nallowed_origins = ["https://a.example"]\n'
    )
    env = {"WSFLEET_CONFIG": str(toml), "WSFLEET_HISTORY_SIZE": "20", "WSFLEET_PORT": "9100"}
    settings = load_settings({"port": "9200"}, env)
    assert settings.port == 9200
    assert settings.history_size == 20
    assert settings.history_ttl == 5.0
    assert settings.allowed_origins == ("https://a.example",)


@pytest.mark.parametrize(
    ("cli", "env", "flag"),
    [
        ({"history_size": "lots"}, {}, "--history-size (from --history-size)"),
        ({}, {"WSFLEET_PORT": "70000"}, "--port (from WSFLEET_PORT)"),
        ({}, {"WSFLEET_LOG_FORMAT": "xml"}, "--log-format"),
        ({"allowed_origins": "not-an-origin"}, {}, "--allowed-origins"),
        ({"drain_timeout": "0"}, {}, "--drain-timeout"),
        ({"redis_url": "http://x"}, {}, "--redis-url"),
    ],
)
def test_bad_values_name_the_flag_and_the_source(
    cli: dict[str, str], env: dict[str, str], flag: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(cli, env)
    assert flag in str(error.value)


def test_secrets_from_files_are_read_and_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text("s3cret-value-long-enough-for-hs256-keys\n")
    settings = load_settings(
        {"jwt_secret_file": str(secret_file)}, {"WSFLEET_API_KEY": "key-value"}
    )
    assert settings.jwt_secret == "s3cret-value-long-enough-for-hs256-keys"
    assert settings.api_key == "key-value"
    shown = str(settings.redacted()) + repr(settings)
    assert "s3cret-value" not in shown and "key-value" not in shown
    with pytest.raises(ConfigError, match="both set"):
        load_settings({"jwt_secret_file": str(secret_file), "jwt_secret": "x"}, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"api_key_file": str(tmp_path / "missing")}, {})


def test_redis_password_is_redacted() -> None:
    assert redact_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert redact_url("redis://db:6379/0") == "redis://db:6379/0"


def test_command_line_fails_at_start_naming_the_flag() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsfleet",
            "serve",
            "--max-rooms",
            "-3",
            "--jwt-secret",
            "topsecret-topsecret-topsecret-topsecret",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--max-rooms" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


def test_a_weak_jwt_secret_is_refused_at_start_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--jwt-secret .*at least 32") as error:
        load_settings({"jwt_secret": "31-bytes-is-one-byte-too-short"}, {})
    assert "31-bytes" not in str(error.value)
    assert load_settings({"jwt_secret": "x" * 32}, {}).jwt_secret == "x" * 32
    secret_file = tmp_path / "jwt"
    secret_file.write_text("short\n")
    with pytest.raises(ConfigError, match=r"WSFLEET_JWT_SECRET_FILE.*too weak"):
        load_settings({}, {"WSFLEET_JWT_SECRET_FILE": str(secret_file)})
    result = subprocess.run(
        [sys.executable, "-m", "wsfleet", "serve", "--jwt-secret", "changeme"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "--jwt-secret" in result.stderr and "at least 32" in result.stderr
    assert "changeme" not in result.stderr + result.stdout


def test_redis_cluster_from_flag_env_or_toml_list(tmp_path: Path) -> None:
    toml = tmp_path / "wsfleet.toml"
    toml.write_text('redis_cluster = ["10.0.0.5:6379", "[::1]:7000"]\npublish_replicas = 1\n')
    settings = load_settings({"config": str(toml)}, {})
    assert settings.redis_cluster == (("10.0.0.5", 6379), ("::1", 7000))
    assert (settings.publish_replicas, settings.publish_replicas_timeout) == (1, 1.0)
    assert settings.redacted()["redis_cluster"] == ["10.0.0.5:6379", "::1:7000"]
    env = {"WSFLEET_REDIS_CLUSTER": "a:1, b:2", "WSFLEET_PUBLISH_REPLICAS": "2"}
    settings = load_settings({}, env)
    assert settings.redis_cluster == (("a", 1), ("b", 2))
    assert settings.publish_replicas == 2
    assert load_settings({}, {}).redis_cluster == ()  # single mode by default


def test_redis_url_and_redis_cluster_exclude_each_other(tmp_path: Path) -> None:
    toml = tmp_path / "wsfleet.toml"
    toml.write_text('redis_url = "redis://10.0.0.5:6379/0"\n')
    with pytest.raises(ConfigError) as error:
        load_settings({"config": str(toml)}, {"WSFLEET_REDIS_CLUSTER": "10.0.0.5:6379"})
    assert "--redis-url (from config file) and --redis-cluster (from WSFLEET_REDIS_CLUSTER)" in str(
        error.value
    )
    with pytest.raises(ConfigError, match=r"--redis-cluster .*'10\.0\.0\.5' is not host:port"):
        load_settings({"redis_cluster": "10.0.0.5"}, {})
    with pytest.raises(ConfigError, match=r"--redis-cluster .*at least one"):
        load_settings({"redis_cluster": " , "}, {})
