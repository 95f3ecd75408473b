"""What an exposed load balancer must do beyond balancing: HSTS and a Secure
affinity cookie over TLS, the client address from trusted proxies only, a
request id passed upstream and logged, no stray default site, a sandboxed
service that still reloads, rate and connection knobs, and listen queues sized
from the capacity target rather than nginx's 511."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from lbclient import nginx_config, open_ws, url, visit, welcome
from test_nginx_lb import http_get, name

TARGET = 9000  # wsfleet_target_connections in molecule.yml
BACKLOG = max(TARGET // 4, 4096)  # sized like os_tuning's somaxconn
HSTS = "max-age=31536000"
# Per host, from molecule.yml: redirect (HTTPS only: HSTS) or serve (plain HTTP too: no HSTS).
HTTPS_ONLY = {"nginx-lb-debian12": True, "nginx-lb-sid": False}
TRUSTS_PROXIES = {"nginx-lb-debian12": False, "nginx-lb-sid": True}  # nginx_lb_real_ip_from
RATE_LIMITED = {"nginx-lb-debian12": False, "nginx-lb-sid": True}  # nginx_lb_limit_req_rate


def test_https_answers_carry_hsts_only_where_the_site_is_https_only(host):
    _, headers, _ = http_get(host, "/lb-health")
    seen = visit(host)
    if HTTPS_ONLY[name(host)]:
        assert headers.get("Strict-Transport-Security") == HSTS
        assert seen.status == 101
        location = nginx_config(host)
        assert "add_header Strict-Transport-Security $wsfleet_hsts always;" in location
    else:
        assert "Strict-Transport-Security" not in headers
        _, plain, _ = http_get(host, "/lb-health", "http")
        assert "Strict-Transport-Security" not in plain


def set_cookie_headers(host, scheme: str) -> list[str]:
    """The Set-Cookie headers of a WebSocket handshake through the load balancer."""
    with open_ws(host, scheme=scheme) as connection:
        return connection.response.headers.get_all("Set-Cookie")


def test_the_affinity_cookie_is_secure_httponly_and_samesite_over_tls(host):
    cookies = [value for value in set_cookie_headers(host, "wss") if value.startswith("wsfleet_lb=")]
    assert len(cookies) == 1, cookies
    attributes = {part.strip().split("=")[0].lower() for part in cookies[0].split(";")[1:]}
    assert {"httponly", "samesite"} <= attributes
    if HTTPS_ONLY[name(host)]:
        assert "secure" in attributes


def test_the_client_address_comes_from_trusted_proxies_only(host):
    spoofed = "203.0.113.7"
    scheme = "wss" if HTTPS_ONLY[name(host)] else "ws"
    with open_ws(host, scheme=scheme, headers={"X-Forwarded-For": spoofed}) as connection:
        seen = welcome(connection)["headers"]
    config = nginx_config(host)
    if TRUSTS_PROXIES[name(host)]:
        assert "real_ip_header X-Forwarded-For;" in config
        assert re.search(r"^\s+set_real_ip_from \S+;", config, re.M)
        assert seen["x-real-ip"] == spoofed
    else:
        assert "set_real_ip_from" not in config
        assert seen["x-real-ip"] != spoofed


def test_a_request_id_is_passed_upstream_and_logged(host):
    seen = visit(host)
    request_id = seen.headers.get("x-request-id", "")
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), seen.headers
    log = host.file("/var/log/nginx/wsfleet-access.json").content_string.splitlines()
    assert request_id in [json.loads(line)["request_id"] for line in log[-20:]]


def test_the_packages_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_nginx_runs_sandboxed_and_still_reloads_on_80_and_443(host):
    report = host.check_output("systemd-analyze security --no-pager nginx.service")
    exposure = float(re.search(r"Overall exposure level for nginx\.service: ([0-9.]+)", report).group(1))
    assert exposure <= 4.0, report
    pid = host.file("/run/nginx.pid").content_string.strip()
    host.check_output("systemctl reload nginx")
    time.sleep(1)
    assert host.file("/run/nginx.pid").content_string.strip() == pid
    assert host.service("nginx").is_running
    assert "Reloading" not in host.check_output("systemctl show -p ActiveState -p SubState nginx")
    listening = host.check_output("ss -ltnH")
    for port in (80, 443):
        assert re.search(rf":{port}\s", listening), listening
    assert visit(host).status == 101


def plain_status(host, path: str) -> int:
    """Status of a plain HTTP GET (no upgrade), from the controller."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url(host, "http", path), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_handshake_rate_is_limited_only_where_configured(host):
    config = nginx_config(host)
    if not RATE_LIMITED[name(host)]:
        assert "limit_req " not in config
        return
    assert "limit_req_status 429;" in config
    statuses = list(ThreadPoolExecutor(max_workers=40).map(lambda _: plain_status(host, "/ws"), range(200)))
    assert 429 in statuses, statuses
    assert "limiting requests" in host.file("/var/log/nginx/error.log").content_string
    time.sleep(6)  # let the bucket drain before the next tests connect again


def test_listen_queues_follow_the_capacity_target_and_workers_share_them(host):
    # Current workers only: after a reload, old ones say "nginx: worker process is shutting down".
    workers = host.check_output("ps -C nginx -o args=").splitlines().count("nginx: worker process")
    listeners = host.check_output("ss -ltnH 'sport = :443'").splitlines()
    assert len(listeners) == workers, listeners  # reuseport: one queue per worker
    for line in listeners:
        assert int(line.split()[2]) == BACKLOG, line  # Send-Q of a listener is its backlog
    config = nginx_config(host)
    assert re.search(rf"listen 443 ssl backlog={BACKLOG} reuseport;", config), config


def test_old_workers_close_after_the_documented_shutdown_timeout(host):
    assert re.search(r"^worker_shutdown_timeout 1h;$", nginx_config(host), re.M)
