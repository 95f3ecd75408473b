"""The firewall on each host: its own table only, loaded at boot, Docker's DNS intact."""

from __future__ import annotations

import pytest
from reachability import MANAGED

ADDRESSES = {"wsfleet-fw-lb": "172.30.241.10", "wsfleet-fw-ws": "172.30.241.21", "wsfleet-fw-redis": "172.30.241.31"}


def tables(host) -> set[str]:
    return {line.strip() for line in host.check_output("nft list tables").splitlines() if line.strip()}


@pytest.mark.parametrize("name", MANAGED)
def test_only_wsfleets_table_is_added_and_dockers_dns_rules_stay(machine, name):
    host = machine(name)
    found = tables(host)
    assert "table inet wsfleet" in found
    # Docker's embedded DNS (127.0.0.11) lives in this network namespace's nat table.
    assert "table ip nat" in found
    assert "127.0.0.11" in host.check_output("nft list table ip nat")
    if name == "wsfleet-fw-redis":
        assert "table ip other_tool" in found  # loaded by prepare.yml, left alone


@pytest.mark.parametrize("name", MANAGED)
def test_dockers_embedded_dns_still_answers(machine, name):
    host = machine(name)
    # Other hosts' names only: a host's own name comes from its /etc/hosts, where
    # Docker writes the address of whichever network it attached first (the load
    # balancer is on two), not from the embedded DNS this test is about.
    for other, address in ADDRESSES.items():
        if other != name:
            assert host.check_output(f"getent hosts {other}").split()[0] == address


@pytest.mark.parametrize("name", MANAGED)
def test_the_rules_file_is_what_is_loaded_and_survives_a_restart(machine, name):
    host = machine(name)
    unit = host.service("wsfleet-firewall.service")
    assert unit.is_enabled and unit.is_running
    # Stateless listings (-s): the drop counter moves with traffic.
    before = host.check_output("nft -s list table inet wsfleet")
    assert "policy drop" in before
    host.check_output("systemctl restart wsfleet-firewall.service")  # what a boot does
    assert host.check_output("nft -s list table inet wsfleet") == before
    # The file is checked by nft as it stands on the host.
    host.check_output("nft -c -f /etc/nftables.d/wsfleet.nft")
