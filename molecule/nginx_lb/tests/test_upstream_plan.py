"""The rules that decide the backends, without a host: discovery, overrides, drains."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

_PLUGIN = Path(__file__).resolve().parents[3] / "roles" / "nginx_lb" / "filter_plugins" / "nginx_lb_upstream.py"
_SPEC = importlib.util.spec_from_file_location("nginx_lb_upstream", _PLUGIN)
upstream = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(upstream)

DEFAULTS = {"port_base": 8000, "instances": 1, "max_fails": 3, "fail_timeout": "10s"}


def ws_host(name, private=None, fact=None, ports=None, base=None, instances=None):
    return {
        "name": name,
        "private_address": private,
        "fact_address": fact,
        "ports": ports,
        "port_base": base,
        "instances": instances,
    }


def plan(ws_hosts=(), explicit=(), backups=(), down=(), drained=(), request=None):
    return upstream.nginx_lb_upstream_plan(
        list(ws_hosts), list(explicit), list(backups), DEFAULTS, list(down), list(drained), request
    )


def keys(result, **where):
    return [s["key"] for s in result["servers"] if all(s[k] == v for k, v in where.items())]


def test_each_host_gives_one_backend_per_instance_on_its_private_address():
    result = plan(
        [ws_host("ws-1", private="10.0.0.11", fact="192.0.2.1", base=8100, instances="3"), ws_host("ws-2", fact="10.0.0.12")]
    )
    assert keys(result) == ["10.0.0.11:8100", "10.0.0.11:8101", "10.0.0.11:8102", "10.0.0.12:8000"]
    assert {s["host"] for s in result["servers"]} == {"ws-1", "ws-2"}


def test_an_explicit_port_list_wins_over_base_and_count():
    result = plan([ws_host("ws-1", private="10.0.0.11", ports=[9001, "9003"], base=8000, instances=5)])
    assert keys(result) == ["10.0.0.11:9001", "10.0.0.11:9003"]


def test_an_explicit_backend_list_replaces_the_inventory():
    result = plan([ws_host("ws-1", private="10.0.0.11")], explicit=[{"address": "10.9.9.9", "port": 7000, "weight": 2}])
    assert keys(result) == ["10.9.9.9:7000"]
    assert result["servers"][0]["weight"] == 2


def test_backups_are_appended_and_ipv6_is_bracketed():
    result = plan([ws_host("ws-1", private="fd00::11")], backups=[{"address": "10.0.0.99", "port": 8000}])
    assert keys(result, backup=False) == ["[fd00::11]:8000"]
    assert keys(result, backup=True) == ["10.0.0.99:8000"]


def test_a_host_without_an_address_is_an_error_naming_the_fix():
    with pytest.raises(AnsibleFilterError, match="ws-1 has no address: set wsfleet_private_address"):
        plan([ws_host("ws-1")])


def test_no_backends_at_all_is_an_error():
    with pytest.raises(AnsibleFilterError, match="no backends"):
        plan([])


def test_a_boolean_where_a_port_belongs_is_refused():
    with pytest.raises(AnsibleFilterError, match="needs a number, got the boolean"):
        plan([ws_host("ws-1", private="10.0.0.11", base=True)])


def test_down_servers_accept_host_names_addresses_and_ports():
    hosts = [ws_host("ws-1", private="10.0.0.11", instances=2), ws_host("ws-2", private="10.0.0.12", instances=2)]
    result = plan(hosts, down=["ws-1", "10.0.0.12:8001"])
    assert keys(result, down=True) == ["10.0.0.11:8000", "10.0.0.11:8001", "10.0.0.12:8001"]
    with pytest.raises(AnsibleFilterError, match="no backend matches 'ws-3'"):
        plan(hosts, down=["ws-3"])


def test_a_drain_adds_to_the_kept_set_and_undrain_removes_from_it():
    hosts = [ws_host("ws-1", private="10.0.0.11", instances=2), ws_host("ws-2", private="10.0.0.12", instances=2)]
    drained = plan(hosts, drained=["10.0.0.12:8000"], request={"backends": ["ws-1:8001"], "state": "down"})
    assert drained["drained"] == ["10.0.0.11:8001", "10.0.0.12:8000"]
    assert keys(drained, down=True) == ["10.0.0.11:8001", "10.0.0.12:8000"]
    back = plan(hosts, drained=drained["drained"], request={"backends": ["10.0.0.12:8000"], "state": "up"})
    assert back["drained"] == ["10.0.0.11:8001"]


def test_a_drain_that_would_leave_no_backend_is_refused():
    with pytest.raises(AnsibleFilterError, match="no other backend would be left"):
        plan([ws_host("ws-1", private="10.0.0.11", instances=2)], request={"backends": ["ws-1"], "state": "down"})


def test_a_drained_backend_that_left_the_inventory_is_forgotten():
    result = plan([ws_host("ws-1", private="10.0.0.11")], drained=["10.0.0.99:8000"])
    assert result["drained"] == []
    assert result["notes"] == ["10.0.0.99:8000: was drained but is no longer a backend, forgotten"]


def test_an_unset_instance_count_is_the_hosts_cpu_count_like_the_ws_server_role():
    result = plan(
        [ws_host("ws-1", private="10.0.0.11") | {"vcpus": 3}, ws_host("ws-2", private="10.0.0.12", instances=1) | {"vcpus": 8}]
    )
    assert keys(result) == ["10.0.0.11:8000", "10.0.0.11:8001", "10.0.0.11:8002", "10.0.0.12:8000"]


def test_one_request_can_return_some_backends_and_drain_others():
    hosts = [ws_host("ws-1", private="10.0.0.11", instances=2), ws_host("ws-2", private="10.0.0.12", instances=2)]
    swapped = plan(
        hosts, drained=["10.0.0.11:8000", "10.0.0.11:8001"], request={"backends": ["ws-2"], "state": "down", "return": ["ws-1"]}
    )
    assert swapped["drained"] == ["10.0.0.12:8000", "10.0.0.12:8001"]
    assert keys(swapped, down=True) == ["10.0.0.12:8000", "10.0.0.12:8001"]
