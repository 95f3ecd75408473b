"""Exporters listen on the private address only; stub_status on loopback only;
the JSON access log rotates."""

from __future__ import annotations

import re

from prometheus import api

HOSTS = {
    "cluster-lb1": ("172.30.233.10", [9100, 9113]),
    "cluster-ws1": ("172.30.233.21", [9100]),
    "cluster-ws2": ("172.30.233.22", [9100]),
    "cluster-redis1": ("172.30.233.31", [9100, 9121]),
    "cluster-mon1": ("172.30.233.40", [9100]),
}


def listeners(host) -> set[str]:
    output = host.check_output("ss -Htln")
    return {line.split()[3] for line in output.splitlines()}


def test_exporters_listen_on_the_private_address_only(machine) -> None:
    for name, (address, ports) in HOSTS.items():
        bound = listeners(machine(name))
        for port in ports:
            assert f"{address}:{port}" in bound, (name, port, bound)
            assert not {f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"} & bound, (name, port, bound)


def test_stub_status_answers_on_loopback_only(machine) -> None:
    lb = machine("cluster-lb1")
    bound = listeners(lb)
    assert "127.0.0.1:8090" in bound
    assert not [b for b in bound if b.endswith(":8090") and not b.startswith("127.0.0.1:")]
    status = lb.check_output(
        "python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8090/stub_status\").read().decode())'"
    )
    assert re.match(r"Active connections: \d+", status), status


def test_exporter_units_are_sandboxed_and_limited(machine) -> None:
    node = machine("cluster-redis1")
    for unit in ("prometheus-node-exporter.service", "wsfleet-redis-exporter@6379.service"):
        shown = node.check_output(f"systemctl show {unit} -p NoNewPrivileges -p ProtectSystem -p LimitNOFILE -p User")
        properties = dict(line.split("=", 1) for line in shown.splitlines())
        assert properties["NoNewPrivileges"] == "yes", (unit, properties)
        assert properties["ProtectSystem"] == "strict", (unit, properties)
        assert properties["LimitNOFILE"] == "4096", (unit, properties)
        assert properties["User"] == "prometheus", (unit, properties)


def test_the_redis_exporter_password_is_readable_by_root_only(machine) -> None:
    env = machine("cluster-redis1").file("/etc/wsfleet-exporters/redis-6379.env")
    assert env.user == "root" and env.mode == 0o600


def test_the_json_access_log_rotates_and_nginx_writes_the_new_one(machine, traffic) -> None:
    lb = machine("cluster-lb1")
    log = "/var/log/nginx/wsfleet-access.json"
    assert lb.file(log).size > 0  # the traffic fixture's WebSocket went through the LB
    lb.check_output("logrotate --force /etc/logrotate.d/wsfleet-nginx")
    assert lb.file(f"{log}.1").exists
    # nginx reopened its log (USR1): a new request lands in the new file.
    lb.check_output("python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1/\").read()' || true")
    lb.check_output("for i in $(seq 50); do [ -s %s ] && exit 0; sleep 0.1; done; exit 1", log)


def test_prometheus_answers_on_the_published_port() -> None:
    assert api("status/buildinfo")["version"]
