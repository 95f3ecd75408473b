"""The pure rules behind two guarantees, without a host: the hard open-file
limit is only ever raised, and a sysctl.d file read after the role's own that
sets one of its keys again is found (systemd-sysctl orders files by name)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PLUGIN = Path(__file__).resolve().parents[3] / "roles" / "os_tuning" / "filter_plugins" / "os_tuning_plan.py"
_SPEC = importlib.util.spec_from_file_location("os_tuning_plan", _PLUGIN)
plan = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(plan)

OWN = "/etc/sysctl.d/99-zz-wsfleet.conf"
CAT_CONFIG = """# /usr/lib/sysctl.d/50-default.conf
net.ipv4.tcp_keepalive_time = 7200
# /etc/sysctl.d/99-sysctl.conf
net.core.somaxconn=128
# /etc/sysctl.d/99-zz-wsfleet.conf
net.core.somaxconn = 4096
net.ipv4.tcp_keepalive_time = 60
# /run/sysctl.d/zz-cloud.conf
# a comment naming net.core.somaxconn = 1
-net/core/somaxconn = 1024
vm.swappiness = 10
"""


def test_only_files_named_after_the_roles_own_count_as_overrides():
    notes = plan.os_tuning_sysctl_overrides(CAT_CONFIG, OWN, ["net.core.somaxconn", "net.ipv4.tcp_keepalive_time"])
    assert notes == [
        f"net.core.somaxconn is set again by /run/sysctl.d/zz-cloud.conf (1024), which systemd-sysctl reads after {OWN}"
    ]


def test_no_override_when_the_role_is_read_last():
    assert plan.os_tuning_sysctl_overrides(CAT_CONFIG.split("# /run/")[0], OWN, ["net.core.somaxconn"]) == []


def test_the_hard_limit_is_never_lowered():
    systemd_default = 524288
    # A VM: systemd's default stays, a small target changes nothing.
    assert plan.os_tuning_nofile_hard(19024, "524288", "1073741816", systemd_default) == 524288
    # A container whose PID 1 is capped at 20000: its limit, not systemd's default.
    assert plan.os_tuning_nofile_hard(19024, "19024", "20000", systemd_default) == 20000
    # A large target raises it.
    assert plan.os_tuning_nofile_hard(2001024, "524288", "1073741816", systemd_default) == 2001024
    # An operator's higher default is kept, and so is infinity.
    assert plan.os_tuning_nofile_hard(19024, "4194304", "1073741816", systemd_default) == 4194304
    assert plan.os_tuning_nofile_hard(19024, "infinity", "infinity", systemd_default) == "infinity"
