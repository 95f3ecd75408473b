"""Verify os_tuning on a converged container, the way an operator would check it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import testinfra
from playbook_run import run_playbook

TARGET = 9000  # wsfleet_target_connections in molecule.yml
NOFILE = TARGET * 2 + 1024
SYSCTL_FILE = "/etc/sysctl.d/99-zz-wsfleet.conf"
OLD_SYSCTL_FILE = "/etc/sysctl.d/60-wsfleet.conf"  # the name releases before used
DEFAULT_SOFT = 1024  # what every other program keeps as its soft open-file limit

# Network keys live in the container's own namespace and must hold the target.
NETWORK_TARGETS = {
    "net.core.somaxconn": "4096",  # max(9000 // 4, 4096)
    "net.ipv4.tcp_max_syn_backlog": "4096",
    "net.ipv4.tcp_keepalive_time": "60",
    "net.ipv4.tcp_keepalive_intvl": "10",
    "net.ipv4.tcp_keepalive_probes": "6",
    "net.ipv4.tcp_tw_reuse": "1",
}
HOSTS = ["os-tuning-debian12", "os-tuning-debian13"]
HOST_WIDE_KEYS = ["fs.file-max", "fs.nr_open", "net.netfilter.nf_conntrack_max"]


def get_host(name: str):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def sysctl(host, key: str) -> str:
    return " ".join(host.check_output(f"sysctl -n {key}").split())


def settings_in_file(host) -> dict[str, str]:
    settings = {}
    for line in host.file(SYSCTL_FILE).content_string.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            settings[key] = value
    return settings


def test_network_settings_reach_their_target(host):
    raised_beforehand = host.backend.get_hostname() == "os-tuning-debian12"
    for key, target in NETWORK_TARGETS.items():
        if key == "net.core.somaxconn" and raised_beforehand:
            continue  # covered by the raise-only test below
        assert sysctl(host, key) == target, key


def test_port_range_is_widened_to_the_target(host):
    low, high = (int(port) for port in sysctl(host, "net.ipv4.ip_local_port_range").split())
    assert low <= 65535 - TARGET  # the target needs this many ports
    assert high == 65535


def test_sysctl_file_holds_every_applied_key(host):
    settings = settings_in_file(host)
    for key in NETWORK_TARGETS:
        if key in settings:
            assert sysctl(host, key) == settings[key], key
    expected = set(NETWORK_TARGETS) | {"net.ipv4.ip_local_port_range"}
    if host.backend.get_hostname() == "os-tuning-debian12":
        expected.discard("net.core.somaxconn")
    assert expected <= set(settings)


def test_host_wide_keys_are_untouched_in_a_container(host):
    settings = settings_in_file(host)
    content = host.file(SYSCTL_FILE).content_string
    for key in HOST_WIDE_KEYS:
        assert key not in settings, key
        host_path = Path("/proc/sys") / key.replace(".", "/")
        if host_path.exists():  # the controller is the container's host
            assert sysctl(host, key) == " ".join(host_path.read_text().split()), key
    assert "fs.file-max: host-wide, left alone inside a container" in content


def hard_limit_before(host) -> int:
    """The hard open-file limit services had before the role (systemd's own, PID 1's)."""
    line = next(line for line in host.file("/proc/1/limits").content_string.splitlines() if line.startswith("Max open files"))
    return int(line.split()[4])


def test_login_sessions_get_a_raised_hard_limit_and_keep_the_soft_one(host):
    limits = host.file("/etc/security/limits.d/90-wsfleet-nofile.conf")
    assert limits.mode == 0o644
    lines = [line.split() for line in limits.content_string.splitlines() if line.strip() and not line.startswith("#")]
    for user in ("*", "root"):
        hard = [int(fields[3]) for fields in lines if fields[:3] == [user, "hard", "nofile"]]
        assert hard and hard[0] >= max(NOFILE, hard_limit_before(host)), lines
        assert not [fields for fields in lines if fields[:3] == [user, "soft", "nofile"]], lines  # soft stays 1024


def test_other_services_keep_soft_1024_and_never_get_a_lower_hard_limit(host):
    dropin = host.file("/etc/systemd/system.conf.d/60-wsfleet-nofile.conf").content_string
    assert f"DefaultLimitNOFILE={DEFAULT_SOFT}:" in dropin
    assert host.check_output("systemctl show -p DefaultLimitNOFILESoft --value") == str(DEFAULT_SOFT)
    hard = int(host.check_output("systemctl show -p DefaultLimitNOFILE --value"))
    assert hard >= max(NOFILE, hard_limit_before(host))
    unit = "wsfleet-nofile-probe"
    host.run(f"systemctl stop {unit}")
    host.check_output(f"systemd-run --unit={unit} --service-type=exec sleep 300")
    try:
        pid = host.check_output(f"systemctl show -p MainPID --value {unit}")
        limits = host.file(f"/proc/{pid}/limits").content_string
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        # A service gets at most what PID 1 holds (a container caps it, at 20000 here).
        assert line.split()[3:5] == [str(DEFAULT_SOFT), str(min(hard, hard_limit_before(host)))]
    finally:
        host.run(f"systemctl stop {unit}")


def test_the_settings_file_is_read_after_every_other_sysctl_file(host):
    assert not host.file(OLD_SYSCTL_FILE).exists
    files = re.findall(r"^# (/\S+\.conf)$", host.check_output("systemd-analyze cat-config sysctl.d"), re.M)
    assert files[-1] == SYSCTL_FILE, files
    assert any(path.endswith("/99-sysctl.conf") or path.startswith("/usr/lib/sysctl.d/") for path in files), files


def test_a_later_file_overriding_a_setting_is_reported():
    override = "/etc/sysctl.d/zz-wsfleet-test-override.conf"
    hosts = [get_host(name) for name in HOSTS]
    for one in hosts:
        one.check_output(f"echo 'net.ipv4.tcp_keepalive_time = 7200' > {override}")
    try:
        failed = run_playbook("converge.yml", "-e", "os_tuning_sysctl_overridden=fail")
        assert failed.returncode != 0
        assert f"net.ipv4.tcp_keepalive_time is set again by {override}" in failed.output, failed.output
        warned = run_playbook("converge.yml")
        assert warned.returncode == 0, warned.output
        assert f"net.ipv4.tcp_keepalive_time is set again by {override}" in warned.output
        assert "Warn that a file read later would undo settings at the next boot" in warned.output
    finally:
        for one in hosts:
            one.check_output(f"rm -f {override}")


def test_check_mode_reports_no_change():
    result = run_playbook("converge.yml", "--check")
    assert result.returncode == 0, result.output
    recap = result.recap()
    assert recap, result.output
    assert all(counts["changed"] == 0 for counts in recap.values()), result.output


def test_wrong_type_fails_with_the_argument_spec_message():
    result = run_playbook("converge.yml", "-e", "wsfleet_target_connections=lots")
    assert result.returncode != 0
    assert "wsfleet_target_connections" in result.output
    assert "unable to convert to int" in result.output
    assert all(counts["changed"] == 0 for counts in result.recap().values()), result.output
