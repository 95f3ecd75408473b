"""The decision rules of os_tuning (raise-only, widen-only, container awareness),
tested as pure logic; the molecule scenario proves them on a real kernel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[1] / "roles/os_tuning/filter_plugins/os_tuning_plan.py"
spec = importlib.util.spec_from_file_location("os_tuning_plan", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)

RAISE_ONLY = ["fs.file-max", "net.core.somaxconn", "net.netfilter.nf_conntrack_max"]
WIDEN_ONLY = ["net.ipv4.ip_local_port_range"]
HOST_WIDE = ["fs.*", "net.netfilter.*"]
OPTIONAL = ["net.netfilter.nf_conntrack_max"]


def plan(wanted, live, in_container=False, allow_host_wide=False):
    live_lines = [f"{key}|{'rw' if writable else 'ro'}|{value}" for key, (value, writable) in live.items()]
    parsed = plugin.os_tuning_parse_live(live_lines)
    return plugin.os_tuning_plan(wanted, parsed, RAISE_ONLY, WIDEN_ONLY, HOST_WIDE, OPTIONAL, in_container, allow_host_wide)


def test_a_lower_capacity_value_is_raised_and_applied():
    result = plan({"net.core.somaxconn": 25000}, {"net.core.somaxconn": ("4096", True)})
    assert result["settings"] == {"net.core.somaxconn": "25000"}
    assert result["drift"] == ["net.core.somaxconn"]


def test_a_higher_capacity_value_is_kept_and_reported():
    result = plan({"fs.file-max": 465536}, {"fs.file-max": ("2466190", True)})
    assert result["settings"] == {}
    assert result["kept"] == ["fs.file-max: 2466190 is above the target 465536, left as it is"]
    assert result["drift"] == []


def test_an_equal_value_is_written_without_drift():
    result = plan({"net.core.somaxconn": "25000"}, {"net.core.somaxconn": ("25000", True)})
    assert result["settings"] == {"net.core.somaxconn": "25000"}
    assert result["drift"] == []


def test_the_port_range_only_widens():
    result = plan({"net.ipv4.ip_local_port_range": "10240 65535"}, {"net.ipv4.ip_local_port_range": ("1024 60999", True)})
    assert result["settings"] == {"net.ipv4.ip_local_port_range": "1024 65535"}
    assert result["kept"]


def test_exact_keys_are_set_as_given_even_when_lower():
    result = plan({"net.ipv4.tcp_keepalive_time": 60}, {"net.ipv4.tcp_keepalive_time": ("7200", True)})
    assert result["settings"] == {"net.ipv4.tcp_keepalive_time": "60"}
    assert result["drift"] == ["net.ipv4.tcp_keepalive_time"]


def test_host_wide_keys_are_skipped_in_a_container_unless_allowed():
    wanted = {"fs.file-max": 465536}
    live = {"fs.file-max": ("100000", True)}
    assert plan(wanted, live, in_container=True)["settings"] == {}
    assert plan(wanted, live, in_container=True, allow_host_wide=True)["settings"] == {"fs.file-max": "465536"}
    assert plan(wanted, live, in_container=False)["settings"] == {"fs.file-max": "465536"}


def test_read_only_and_missing_optional_keys_are_skipped():
    wanted = {"net.netfilter.nf_conntrack_max": 265536, "net.core.somaxconn": 4096}
    result = plan(wanted, {"net.core.somaxconn": ("4096", False)})
    assert result["settings"] == {}
    assert len(result["skipped"]) == 2


def test_a_missing_mandatory_key_is_an_error_naming_it():
    with pytest.raises(AnsibleFilterError, match=r"net\.ipv4\.no_such_key"):
        plan({"net.ipv4.no_such_key": 1}, {})


@pytest.mark.parametrize("bad", [True, "lots", "1 2 3"])
def test_non_numbers_are_refused_for_capacity_keys(bad):
    with pytest.raises(AnsibleFilterError, match=r"net\.core\.somaxconn"):
        plan({"net.core.somaxconn": bad}, {"net.core.somaxconn": ("4096", True)})


def test_the_probe_lines_are_grouped_by_question_in_order():
    lines = [
        "sysctl|net.core.somaxconn|rw|4096",
        "config|# /etc/sysctl.d/99-zz-wsfleet.conf",
        "config|net.core.somaxconn = 4096",
        "nofile|524288",
        "nofile|20000",
        "file|/etc/x.conf|regular file root root 0644 da39a3ee5e6b4b0d3255bfef95601890afd80709",
    ]
    sections = plugin.os_tuning_probe_sections(lines)
    assert sections["sysctl"] == ["net.core.somaxconn|rw|4096"]
    assert sections["config"] == ["# /etc/sysctl.d/99-zz-wsfleet.conf", "net.core.somaxconn = 4096"]
    assert sections["nofile"] == ["524288", "20000"]
    assert sections["file"] == ["/etc/x.conf|regular file root root 0644 da39a3ee5e6b4b0d3255bfef95601890afd80709"]
    assert "ulimit" not in sections


def test_a_probe_line_without_a_tag_is_an_error():
    with pytest.raises(AnsibleFilterError, match="unexpected line"):
        plugin.os_tuning_probe_sections(["no tag here"])


def test_a_later_sysctl_file_setting_a_key_again_is_reported_from_the_probe_lines():
    lines = [
        "# /etc/sysctl.d/99-zz-wsfleet.conf",
        "net.ipv4.tcp_keepalive_time = 60",
        "",
        "# /etc/sysctl.d/zz-override.conf",
        "net.ipv4.tcp_keepalive_time = 7200",
    ]
    own, keys = "/etc/sysctl.d/99-zz-wsfleet.conf", ["net.ipv4.tcp_keepalive_time"]
    notes = plugin.os_tuning_sysctl_overrides(lines, own, keys)
    assert notes == [
        "net.ipv4.tcp_keepalive_time is set again by /etc/sysctl.d/zz-override.conf (7200),"
        " which systemd-sysctl reads after /etc/sysctl.d/99-zz-wsfleet.conf"
    ]
    assert plugin.os_tuning_sysctl_overrides("\n".join(lines), own, keys) == notes
