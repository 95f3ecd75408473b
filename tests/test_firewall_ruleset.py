"""The firewall's decisions (which sets, which rules) as pure logic; the firewall
scenario proves the rendered rules on real kernels (molecule/firewall)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[1] / "roles/firewall/filter_plugins/firewall_ruleset.py"
spec = importlib.util.spec_from_file_location("firewall_ruleset", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)

SOURCES = {
    "clients": ["0.0.0.0/0", "::/0"],
    "admins": ["10.0.0.0/24"],
    "loadbalancers": ["10.0.0.10"],
    "monitoring": [],
    "redis": ["10.0.0.31", "fd00::31"],
}


def rules_of(ruleset):
    return [(rule["name"], rule["family"], rule["set"], tuple(rule["ports"])) for rule in ruleset["rules"]]


def test_a_service_opens_its_ports_to_each_family_of_each_source():
    services = [{"name": "http", "ports": [443, "80", 80], "sources": ["clients"]}]
    ruleset = plugin.firewall_ruleset(services, SOURCES)
    assert rules_of(ruleset) == [("http", "ip", "clients", (80, 443)), ("http", "ip6", "clients", (80, 443))]
    assert ruleset["sets"] == {"clients": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}}


def test_an_empty_source_set_opens_nothing():
    services = [{"name": "node exporter", "ports": [9100], "sources": ["monitoring"]}]
    assert plugin.firewall_ruleset(services, SOURCES)["rules"] == []


def test_a_service_that_does_not_apply_to_this_host_opens_nothing():
    services = [{"name": "redis", "ports": [6379], "sources": ["loadbalancers"], "applies": False}]
    assert plugin.firewall_ruleset(services, SOURCES)["rules"] == []
    services[0]["applies"] = "True"  # as Jinja may hand it over
    assert len(plugin.firewall_ruleset(services, SOURCES)["rules"]) == 1


def test_the_cluster_bus_is_the_port_plus_the_offset_for_the_peers_only():
    services = [{"name": "redis cluster bus", "ports": [6379, 6380], "port_offset": 10000, "sources": ["redis"]}]
    assert rules_of(plugin.firewall_ruleset(services, SOURCES)) == [
        ("redis cluster bus", "ip", "redis", (16379, 16380)),
        ("redis cluster bus", "ip6", "redis", (16379, 16380)),
    ]


def test_overlapping_sources_are_merged_and_single_addresses_written_bare():
    sources = {"admins": ["10.0.0.0/24", "10.0.0.5", "10.0.1.0/24", "fd00::1/128"]}
    services = [{"name": "ssh", "ports": [22], "sources": ["admins"]}]
    assert plugin.firewall_ruleset(services, sources)["sets"]["admins"] == {"ipv4": ["10.0.0.0/23"], "ipv6": ["fd00::1"]}


def test_unused_sets_are_left_out():
    services = [{"name": "ssh", "ports": [22], "sources": ["admins"]}]
    assert set(plugin.firewall_ruleset(services, SOURCES)["sets"]) == {"admins"}


def test_extra_rules_get_their_own_set():
    extra = [{"name": "keepalived", "protocol": "udp", "ports": [112], "sources": ["10.0.0.0/24"]}]
    ruleset = plugin.firewall_ruleset([], SOURCES, extra)
    assert rules_of(ruleset) == [("keepalived", "ip", "extra_0", (112,))]
    assert ruleset["rules"][0]["protocol"] == "udp"


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ({"clients": ["10.0.0.300"]}, r"wsfleet_client_sources: '10\.0\.0\.300' is not an address or a network"),
        ({"clients": ["10.0.0.5/24"]}, "wsfleet_client_sources: '10.0.0.5/24' is not an address or a network"),
        ({"clients": "0.0.0.0/0"}, "wsfleet_client_sources must be a list"),
    ],
)
def test_a_malformed_source_names_its_variable(sources, message):
    with pytest.raises(AnsibleFilterError, match=message):
        plugin.firewall_ruleset([], sources, [], {"clients": "wsfleet_client_sources"})


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"name": "x", "ports": [0], "sources": ["admins"]}, "port 0 is not between 1 and 65535"),
        ({"name": "x", "ports": [70000], "sources": ["admins"]}, "port 70000 is not between 1 and 65535"),
        ({"name": "x", "ports": [True], "sources": ["admins"]}, "a port must be a number"),
        ({"name": "x", "ports": [22], "sources": ["nobody"]}, "unknown source set 'nobody'"),
        ({"name": "x", "ports": [22], "sources": ["admins"], "protocol": "sctp"}, "protocol must be tcp or udp"),
        ({"name": "bus", "ports": [60000], "port_offset": 10000, "sources": ["admins"]}, "port 70000"),
    ],
)
def test_a_malformed_service_is_refused(service, message):
    with pytest.raises(AnsibleFilterError, match=message):
        plugin.firewall_ruleset([service], SOURCES)


def test_an_incomplete_extra_rule_names_its_index():
    with pytest.raises(AnsibleFilterError, match=r"firewall_extra_rules\[0\] needs a name, ports and sources"):
        plugin.firewall_ruleset([], SOURCES, [{"name": "x", "ports": [1]}])
