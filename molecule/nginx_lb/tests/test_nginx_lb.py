"""Verify nginx_lb on each converged container, through the load balancer itself."""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.request
from contextlib import ExitStack

import pytest
from lbclient import (
    BACKEND_PORTS,
    COOKIE,
    HOSTS,
    address,
    all_backends,
    get_host,
    nginx_config,
    open_ws,
    servers_reached,
    tls_context,
    url,
    visit,
    welcome,
)
from websockets.exceptions import InvalidStatus

TARGET = 9000  # wsfleet_target_connections in molecule.yml
NOFILE = TARGET * 2 + 1024
LIMIT_CONN = {"nginx-lb-sid": 20}  # nginx_lb_limit_conn_per_client in molecule.yml


def name(host) -> str:
    return host.backend.get_hostname()


def http_get(host, path: str, scheme: str = "https") -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects; HTTPS trusts the host's certificate."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers = [NoRedirect(), urllib.request.ProxyHandler({})]
    if scheme == "https":
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(host)))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url(host, scheme, path), timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_nginx_runs_with_limits_sized_from_the_target(host):
    config = nginx_config(host)
    assert re.search(rf"^worker_rlimit_nofile {NOFILE};$", config, re.M)
    assert re.search(rf"^\s+worker_connections {TARGET * 2 + 512};$", config, re.M)
    assert re.search(r"^\s+use epoll;$", config, re.M)
    assert re.search(r"^worker_processes auto;$", config, re.M)
    pid = host.file("/run/nginx.pid").content_string.strip()
    limits = host.file(f"/proc/{pid}/limits").content_string
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(NOFILE), str(NOFILE)]


def test_websocket_location_has_long_timeouts_no_buffering_and_the_upgrade_map(host):
    config = nginx_config(host)
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s+default upgrade;\s+''\s+close;\s+\}", config)
    location = config[config.index("location = /ws {") :]
    location = location[: location.index("\n}")]
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_read_timeout 86400s;",
        "proxy_send_timeout 86400s;",
        "proxy_buffering off;",
    ):
        assert directive in location, directive
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in config


def test_cookie_affinity_is_native_on_sid_and_the_fallback_on_debian12(host):
    config = nginx_config(host)
    if name(host) == "nginx-lb-sid":
        assert f"sticky cookie {COOKIE} path=/ httponly samesite=lax;" in config
        assert "hash $wsfleet_affinity_key consistent;" not in config
    else:
        assert not re.search(r"^\s+sticky ", config, re.M)
        assert "hash $wsfleet_affinity_key consistent;" in config
        assert f'add_header Set-Cookie "{COOKIE}=$wsfleet_affinity_key;' in config


def test_backends_come_from_the_inventory(host):
    config = nginx_config(host)
    listed = set(re.findall(r"^\s+server (\S+) max_fails=3 fail_timeout=10s;\s+# (\S+)$", config, re.M))
    expected = {(f"{address(get_host(other))}:{port}", other) for other in HOSTS for port in BACKEND_PORTS}
    assert listed == expected


def test_a_websocket_upgrades_through_nginx_and_echoes(host):
    seen = visit(host)
    assert seen.status == 101
    assert seen.server in all_backends()
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.headers["x-forwarded-for"] == seen.headers["x-real-ip"]
    assert seen.headers["upgrade"].lower() == "websocket"


def test_both_tls_versions_are_offered(host):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = tls_context(host)
        context.minimum_version = context.maximum_version = version
        with ExitStack() as stack:
            raw = stack.enter_context(socket.create_connection((address(host), 443), timeout=10))
            tls = stack.enter_context(context.wrap_socket(raw, server_hostname=address(host)))
            assert tls.version() == version.name.replace("v1_", "v1.")


def test_the_health_path_is_answered_by_nginx_on_https_and_http(host):
    for scheme in ("https", "http"):
        status, _, body = http_get(host, "/lb-health", scheme)
        assert status == 200, scheme
        assert json.loads(body) == {"status": "ok"}


def test_plain_http_redirects_or_serves_as_configured(host):
    status, headers, _ = http_get(host, "/ws?x=1", "http")
    if name(host) == "nginx-lb-debian12":  # nginx_lb_http_mode: redirect
        assert status == 301
        assert headers["Location"] == f"https://{address(host)}/ws?x=1"
    else:  # serve
        assert visit(host, scheme="ws").server in all_backends()


def test_a_connection_with_the_cookie_stays_on_its_backend(host):
    first = visit(host)
    assert first.cookie, "the first response must pin an affinity cookie"
    assert servers_reached(host, 8, cookie=first.cookie) == [first.server] * 8


def test_connections_without_the_cookie_spread_over_backends(host):
    assert len(set(servers_reached(host, 12))) >= 3


def test_each_websocket_is_logged_as_json_with_its_backend(host):
    seen = visit(host)
    log = host.file("/var/log/nginx/wsfleet-access.json").content_string.splitlines()
    entries = [json.loads(line) for line in log[-20:]]
    entry = next(entry for entry in reversed(entries) if entry["uri"] == "/ws")
    assert entry["status"] == 101
    backend_host, port = seen.server.split(":")
    assert entry["upstream"] == f"{address(get_host(backend_host))}:{port}"
    for field in ("request_time", "upstream_connect_time", "upstream_header_time", "request_id", "client"):
        assert entry[field] not in ("", None), field


def test_the_demo_location_serves_static_files(host):
    host.run("echo demo-page > /var/www/wsfleet/wsfleet-test.txt")
    try:
        status, _, body = http_get(host, "/wsfleet-test.txt")
        assert (status, body) == (200, b"demo-page\n")
    finally:
        host.run("rm -f /var/www/wsfleet/wsfleet-test.txt")
    assert http_get(host, "/missing.txt")[0] == 404


def test_connections_per_client_address_are_limited_where_configured(host):
    limit = LIMIT_CONN.get(name(host))
    if limit is None:
        assert "limit_conn " not in nginx_config(host)
        return
    with ExitStack() as stack:
        for _ in range(limit):
            welcome(stack.enter_context(open_ws(host)))
        with pytest.raises(InvalidStatus) as refused:
            open_ws(host)
        assert refused.value.response.status_code == 429
    assert visit(host).status == 101  # the slots are free again once those closed
