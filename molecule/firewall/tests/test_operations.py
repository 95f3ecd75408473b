"""Operating the firewall: check mode changes nothing, a malformed inventory fails
early and leaves the loaded rules as they were, a lost table is put back."""

from __future__ import annotations

from playbook_run import run_playbook


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
