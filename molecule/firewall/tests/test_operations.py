"""Operating the firewall: check mode changes nothing, a malformed inventory fails
early and leaves the loaded rules as they were, a lost table is put back."""

from __future__ import annotations

from playbook_run import run_playbook
from role_run import apply_role_in_check_mode


def test_check_mode_on_the_converged_fleet_reports_no_change():
    result = run_playbook("converge.yml", "--check", "--diff")
    assert result.returncode == 0, result.output[-3000:]
    recap = result.recap()
    assert set(recap) == {"wsfleet-fw-lb", "wsfleet-fw-ws", "wsfleet-fw-redis", "wsfleet-fw-mon"}
    assert all(counts["changed"] == 0 and counts["failed"] == 0 for counts in recap.values()), recap


def test_a_malformed_source_fails_naming_the_variable_and_keeps_the_loaded_rules(machine):
    lb = machine("wsfleet-fw-lb")
    before = lb.check_output("nft -s list table inet wsfleet")
    result = run_playbook("converge.yml", "--limit", "wsfleet-fw-lb", "-e", '{"wsfleet_client_sources": ["10.0.0.300/8"]}')
    assert result.returncode != 0
    assert "wsfleet_client_sources: '10.0.0.300/8' is not an address or a network" in result.output, result.output[-3000:]
    assert lb.check_output("nft -s list table inet wsfleet") == before


def test_a_source_of_the_wrong_type_fails_on_the_argument_spec(machine):
    result = run_playbook("converge.yml", "--limit", "wsfleet-fw-lb", "-e", '{"wsfleet_admin_sources": 10}')
    assert result.returncode != 0
    assert "wsfleet_admin_sources" in result.output and "list" in result.output, result.output[-3000:]


def test_a_table_removed_by_hand_is_put_back(machine):
    ws = machine("wsfleet-fw-ws")
    expected = ws.check_output("nft -s list table inet wsfleet")
    ws.check_output("nft delete table inet wsfleet")
    result = run_playbook("converge.yml", "--limit", "wsfleet-fw-ws")
    assert result.returncode == 0, result.output[-3000:]
    assert result.recap()["wsfleet-fw-ws"]["changed"] >= 1
    assert ws.check_output("nft -s list table inet wsfleet") == expected


FRESH_HOST_INVENTORY = """
all:
  children:
    ws_servers:
      hosts:
        wsfleet-fw-outside:
          ansible_connection: community.docker.docker
          # Its only address is on the "internet" network: accepted only because
          # the operator says so.
          wsfleet_private_address: 198.51.100.50
          wsfleet_private_address_allow_public: true
          ws_server_instances: 2
"""


def test_check_mode_on_a_fresh_host_passes_and_changes_nothing(machine, tmp_path):
    # wsfleet-fw-outside never had the role: no nftables, no unit, no table.
    outside = machine("wsfleet-fw-outside")
    assert not outside.exists("nft")
    inventory = tmp_path / "fresh.yml"
    inventory.write_text(FRESH_HOST_INVENTORY)
    returncode, output = apply_role_in_check_mode("firewall", inventory)
    assert returncode == 0, output[-3000:]
    assert "ok: [wsfleet-fw-outside]" in output
    assert not outside.exists("nft")
    assert not outside.file("/etc/systemd/system/wsfleet-firewall.service").exists
