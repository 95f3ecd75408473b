"""What an operator does to a running load balancer, run as playbooks from the
controller against both instances: check mode, a rejected configuration, a
configuration change, a drain. Each test leaves the instances as it found them."""

from __future__ import annotations

import json
import re
import time

import pytest
from lbclient import (
    HOSTS,
    address,
    all_backends,
    echoes,
    get_host,
    master_pid,
    nginx_config,
    open_ws,
    servers_reached,
    visit,
    welcome,
)
from playbook_run import run_playbook

DRAINED = "nginx-lb-sid:8102"  # the backend the drain test takes out of service


@pytest.fixture(scope="module")
def lbs():
    return [get_host(name) for name in HOSTS]


def snapshot(host) -> dict[str, str]:
    """What must not change when a run fails: the master process and the live files."""
    files = host.check_output("md5sum /etc/nginx/nginx.conf /etc/nginx/wsfleet/*.conf")
    return {"pid": master_pid(host), "files": files}


def upstream_lines(host) -> list[str]:
    return [line.strip() for line in nginx_config(host).splitlines() if re.match(r"\s+server \S+ max_fails", line)]


def test_check_mode_reports_no_change():
    result = run_playbook("apply_nginx_lb.yml", "--check")
    assert result.returncode == 0, result.output
    recap = result.recap()
    assert set(recap) == set(HOSTS), result.output
    assert all(counts["changed"] == 0 for counts in recap.values()), result.output


def test_a_wrong_choice_fails_with_the_argument_spec_message(lbs):
    before = [snapshot(host) for host in lbs]
    result = run_playbook("apply_nginx_lb.yml", "-e", "nginx_lb_affinity=sticky")
    assert result.returncode != 0
    assert "nginx_lb_affinity" in result.output
    assert "cookie, ip_hash, least_conn, round_robin" in result.output
    assert [snapshot(host) for host in lbs] == before


def test_native_cookies_fail_early_where_nginx_has_no_sticky_directive(lbs):
    debian12 = lbs[HOSTS.index("nginx-lb-debian12")]
    before = snapshot(debian12)
    result = run_playbook("apply_nginx_lb.yml", "--limit", "nginx-lb-debian12", "-e", "nginx_lb_cookie_strategy=native")
    assert result.returncode != 0
    assert "open-source nginx has since 1.29.6; this host has nginx 1.22" in " ".join(result.output.split())
    assert snapshot(debian12) == before


def test_a_rejected_configuration_leaves_nginx_serving_as_before(lbs):
    before = [snapshot(host) for host in lbs]
    broken = json.dumps({"nginx_lb_http_extra": "wsfleet_no_such_directive on;"})
    result = run_playbook("apply_nginx_lb.yml", "-e", broken)
    assert result.returncode != 0
    assert 'unknown directive "wsfleet_no_such_directive"' in result.output
    assert "Nothing went live" in result.output
    assert all(counts["failed"] == 1 for counts in result.recap().values()), result.output
    assert [snapshot(host) for host in lbs] == before  # same files, same master process
    for host in lbs:
        assert "wsfleet_no_such_directive" not in nginx_config(host)
        assert visit(host).status == 101


def test_a_change_reloads_nginx_and_open_websockets_survive(lbs):
    pids = [master_pid(host) for host in lbs]
    connections = [open_ws(host) for host in lbs]
    try:
        for connection in connections:
            welcome(connection)

        # ip_hash: every connection from one client address reaches one backend.
        result = run_playbook("apply_nginx_lb.yml", "-e", "nginx_lb_affinity=ip_hash")
        assert result.returncode == 0, result.output
        assert "RUNNING HANDLER [nginx_lb : Reload nginx, keeping open connections]" in result.output
        for host, pid, connection in zip(lbs, pids, connections, strict=True):
            assert master_pid(host) == pid
            assert echoes(connection, "still here after the reload")
            assert "    ip_hash;" in nginx_config(host)
            assert len(set(servers_reached(host, 8))) == 1

        result = run_playbook("apply_nginx_lb.yml")  # back to the scenario's configuration
        assert result.returncode == 0, result.output
        for host, pid, connection in zip(lbs, pids, connections, strict=True):
            assert master_pid(host) == pid
            assert echoes(connection, "still here after the second reload")
            assert "ip_hash;" not in nginx_config(host)
    finally:
        for connection in connections:
            connection.close()


def pinned_cookie(host, backend: str) -> str:
    """An affinity cookie that leads to the given backend."""
    for _ in range(60):
        seen = visit(host)
        if seen.server == backend:
            return seen.cookie
    raise AssertionError(f"no connection reached {backend}")


def test_a_drained_backend_gets_no_new_connections(lbs):
    drained_address = f"{address(get_host(DRAINED.split(':')[0]))}:{DRAINED.split(':')[1]}"
    cookies = [pinned_cookie(host, DRAINED) for host in lbs]
    pids = [master_pid(host) for host in lbs]
    open_connections = [open_ws(host, cookie) for host, cookie in zip(lbs, cookies, strict=True)]
    try:
        for connection in open_connections:
            assert welcome(connection)["server"] == DRAINED

        down = run_playbook("drain.yml", "-e", json.dumps({"nginx_lb_drain_backends": [DRAINED], "nginx_lb_drain_state": "down"}))
        assert down.returncode == 0, down.output
        for host, pid, cookie, connection in zip(lbs, pids, cookies, open_connections, strict=True):
            assert master_pid(host) == pid
            assert f"server {drained_address} max_fails=3 fail_timeout=10s down;  # nginx-lb-sid (drained)" in upstream_lines(
                host
            )
            assert json.loads(host.file("/var/lib/wsfleet/nginx_lb/drained.json").content_string) == [drained_address]
            assert echoes(connection, "an open connection stays until it closes")
            assert visit(host, cookie).server != DRAINED  # its clients are moved
            reached = set(servers_reached(host, 12))
            assert DRAINED not in reached
            assert reached <= all_backends()
    finally:
        for connection in open_connections:
            connection.close()
        up = run_playbook("drain.yml", "-e", json.dumps({"nginx_lb_drain_backends": [DRAINED], "nginx_lb_drain_state": "up"}))
    assert up.returncode == 0, up.output
    for host, cookie in zip(lbs, cookies, strict=True):
        assert not [line for line in upstream_lines(host) if " down;" in line]
        assert visit(host, cookie).server == DRAINED  # the old cookie leads back to it


def test_a_drain_is_light_and_swaps_backends_in_one_reload(lbs):
    """A drain renders the upstream, checks it and reloads: no pass over the whole role.
    A rolling restart returns one step's backends and drains the next one's in one reload."""
    whole_host = "nginx-lb-debian12"  # a whole host per step: every port of it
    started = time.monotonic()
    down = run_playbook("drain.yml", "-e", json.dumps({"nginx_lb_drain_backends": [DRAINED], "nginx_lb_drain_state": "down"}))
    seconds = time.monotonic() - started
    try:
        assert down.returncode == 0, down.output
        tasks = {host: counts["ok"] for host, counts in down.recap().items()}
        print(f"drain of one backend: {seconds:.1f} s, tasks ok per load balancer: {tasks}")
        assert all(count <= 24 for count in tasks.values()), down.output  # the whole role: 32
        assert down.output.count("RUNNING HANDLER [nginx_lb : Reload nginx, keeping open connections]") == 1

        swap = run_playbook(
            "drain.yml",
            "-e",
            json.dumps({"nginx_lb_drain_backends": [whole_host], "nginx_lb_drain_return_backends": [DRAINED]}),
        )
        assert swap.returncode == 0, swap.output
        assert swap.output.count("RUNNING HANDLER [nginx_lb : Reload nginx, keeping open connections]") == 1
        for host in lbs:
            down_lines = [line for line in upstream_lines(host) if " down;" in line]
            assert len(down_lines) == 3 and all(line.endswith(f"# {whole_host} (drained)") for line in down_lines), down_lines
            assert all(seen.split(":")[0] != whole_host for seen in servers_reached(host, 6))
    finally:
        up = run_playbook(
            "drain.yml", "-e", json.dumps({"nginx_lb_drain_backends": [DRAINED, whole_host], "nginx_lb_drain_state": "up"})
        )
    assert up.returncode == 0, up.output
    for host in lbs:
        assert not [line for line in upstream_lines(host) if " down;" in line]
