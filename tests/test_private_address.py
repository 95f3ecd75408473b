"""The one rule every role uses to pick a host's private address (issue 15, item 1),
tested as pure logic; the firewall scenario proves it on a host whose default
route is public (molecule/firewall/tests/test_private_address_fails_closed.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[1] / "roles/private_address/filter_plugins/wsfleet_private_address.py"
spec = importlib.util.spec_from_file_location("wsfleet_private_address", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


def of(host_vars: dict) -> str:
    return plugin.wsfleet_private_address(host_vars, "ws-1")


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "100.64.0.1", "fd12::5"])
def test_an_explicit_private_address_is_kept(address):
    assert of({"wsfleet_private_address": address, "ansible_facts": {"default_ipv4": {"address": "203.0.113.9"}}}) == address


def test_an_explicit_address_wins_over_the_facts():
    facts = {"default_ipv4": {"address": "10.0.0.1"}, "all_ipv4_addresses": ["10.0.0.1", "10.9.0.1"]}
    assert of({"wsfleet_private_address": "10.9.0.1", "ansible_facts": facts}) == "10.9.0.1"


@pytest.mark.parametrize("address", ["203.0.113.7", "172.32.0.1", "100.128.0.1", "8.8.8.8", "2001:db8::1", "127.0.0.1"])
def test_an_explicit_public_address_fails_naming_the_variable(address):
    with pytest.raises(AnsibleFilterError, match=r"ws-1: wsfleet_private_address .* is not a private address"):
        of({"wsfleet_private_address": address})


def test_the_operator_may_allow_an_explicit_public_address():
    assert of({"wsfleet_private_address": "203.0.113.7", "wsfleet_private_address_allow_public": True}) == "203.0.113.7"
    assert of({"wsfleet_private_address": "203.0.113.7", "wsfleet_private_address_allow_public": "yes"}) == "203.0.113.7"


def test_the_override_never_accepts_a_wildcard_or_garbage():
    for value in ("0.0.0.0", "::"):
        with pytest.raises(AnsibleFilterError, match="is not a host address"):
            of({"wsfleet_private_address": value, "wsfleet_private_address_allow_public": True})
    for value in ("10.0.0.0/8", "ws-1.example.net", "10.0.0.300"):
        with pytest.raises(AnsibleFilterError, match="must be one IPv4 or IPv6 address"):
            of({"wsfleet_private_address": value})
    with pytest.raises(AnsibleFilterError, match="wsfleet_private_address_allow_public needs true or false"):
        of({"wsfleet_private_address": "203.0.113.7", "wsfleet_private_address_allow_public": "maybe"})


def test_a_private_default_route_address_is_used():
    facts = {"default_ipv4": {"address": "10.0.0.5"}, "all_ipv4_addresses": ["10.0.0.5", "172.17.0.1"]}
    assert of({"ansible_facts": facts}) == "10.0.0.5"


def test_a_public_default_route_fails_closed_even_with_a_private_interface():
    # The host's private interface may be docker0 or a VPN: no guess, the operator says which.
    facts = {"default_ipv4": {"address": "203.0.113.9"}, "all_ipv4_addresses": ["203.0.113.9", "10.0.0.5"]}
    with pytest.raises(AnsibleFilterError, match=r"default IPv4 address 203\.0\.113\.9 is not private") as failure:
        of({"ansible_facts": facts})
    assert "Set wsfleet_private_address for this host" in str(failure.value)
    assert "10.0.0.5" in str(failure.value)  # the candidates are listed to help


def test_without_a_default_route_the_one_private_address_is_used():
    facts = {"default_ipv4": {}, "all_ipv4_addresses": ["172.30.241.21"]}
    assert of({"ansible_facts": facts}) == "172.30.241.21"


def test_without_a_default_route_several_private_addresses_fail():
    facts = {"default_ipv4": {}, "all_ipv4_addresses": ["10.0.0.5", "10.1.0.5"]}
    with pytest.raises(AnsibleFilterError, match=r"several private addresses \(10\.0\.0\.5, 10\.1\.0\.5\)"):
        of({"ansible_facts": facts})


def test_no_address_at_all_fails_naming_the_variable():
    for host_vars in ({}, {"ansible_facts": {}}, {"ansible_facts": {"all_ipv4_addresses": ["198.51.100.4"]}}):
        with pytest.raises(AnsibleFilterError, match="ws-1: no private address: wsfleet_private_address is not set"):
            of(host_vars)


def test_several_hosts_at_once_each_checked():
    hostvars = {
        "lb-1": {"wsfleet_private_address": "10.0.0.10"},
        "ws-1": {"ansible_facts": {"default_ipv4": {"address": "10.0.0.21"}}},
    }
    assert plugin.wsfleet_private_addresses(hostvars, ["lb-1", "ws-1"]) == ["10.0.0.10", "10.0.0.21"]
    hostvars["ws-2"] = {"wsfleet_private_address": "203.0.113.4"}
    with pytest.raises(AnsibleFilterError, match=r"ws-2: wsfleet_private_address 203\.0\.113\.4 is not a private address"):
        plugin.wsfleet_private_addresses(hostvars, ["lb-1", "ws-2"])
