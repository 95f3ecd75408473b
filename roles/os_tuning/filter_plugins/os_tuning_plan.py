"""Decide which kernel settings os_tuning writes, given what the host has now.

The rules live here rather than in Jinja because they are the heart of the role
and deserve unit tests (tests/test_os_tuning_plan.py):
- capacity keys are only raised: a host that already has more keeps its value;
- port ranges are only widened;
- host-wide keys are left alone inside a container unless explicitly allowed;
- keys the kernel does not have are skipped when optional, an error otherwise;
- a sysctl.d file read after the role's own that sets one of its keys again is
  reported (it would undo the setting at the next boot);
- the hard open-file limit of services and logins is only ever raised.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from typing import Any

from ansible.errors import AnsibleFilterError


def _normalise(value: Any) -> str:
    return " ".join(str(value).split())


def _as_int(key: str, value: Any, origin: str) -> int:
    if isinstance(value, bool):
        raise AnsibleFilterError(f"os_tuning: {key} needs a number, got the boolean {value!r} ({origin})")
    try:
        return int(str(value).strip())
    except ValueError:
        raise AnsibleFilterError(f"os_tuning: {key} needs a number, got {value!r} ({origin})") from None


def _as_range(key: str, value: Any, origin: str) -> tuple[int, int]:
    parts = _normalise(value).split(" ")
    if len(parts) != 2:
        raise AnsibleFilterError(f"os_tuning: {key} needs two port numbers 'LOW HIGH', got {value!r} ({origin})")
    low, high = (_as_int(key, part, origin) for part in parts)
    if not 1 <= low <= high <= 65535:
        raise AnsibleFilterError(f"os_tuning: {key} must satisfy 1 <= LOW <= HIGH <= 65535, got {value!r} ({origin})")
    return low, high


def os_tuning_parse_live(lines: list[str]) -> dict[str, dict[str, Any]]:
    """Parse the "key|rw|value" lines the role reads from /proc/sys."""
    live: dict[str, dict[str, Any]] = {}
    for line in lines:
        fields = line.split("|", 2)
        if len(fields) != 3:
            raise AnsibleFilterError(f"os_tuning: unexpected line from /proc/sys: {line!r}")
        key, mode, value = fields
        live[key] = {"writable": mode == "rw", "value": value}
    return live


def os_tuning_probe_sections(lines: list[str]) -> dict[str, list[str]]:
    """Group the "TAG|rest" lines of the role's one-pass probe by tag: {tag: [rest, ...]}."""
    sections: dict[str, list[str]] = {}
    for line in lines:
        tag, separator, rest = line.partition("|")
        if not separator:
            raise AnsibleFilterError(f"os_tuning: unexpected line from the probe: {line!r}")
        sections.setdefault(tag, []).append(rest)
    return sections


def os_tuning_plan(
    wanted: dict[str, Any],
    live: dict[str, dict[str, Any]],
    raise_only: list[str],
    widen_only: list[str],
    host_wide_patterns: list[str],
    optional: list[str],
    in_container: bool,
    allow_host_wide: bool,
) -> dict[str, Any]:
    """Return {settings, kept, skipped, drift} for the wanted settings.

    live maps each key the kernel has to {"value": str, "writable": bool}.
    settings: what goes into the sysctl.d file; kept: notes on values left higher;
    skipped: notes on keys not touched and why; drift: keys whose live value
    differs from settings, so the file must be applied.
    """
    settings: dict[str, str] = {}
    kept: list[str] = []
    skipped: list[str] = []
    for key, target in wanted.items():
        host_wide = any(fnmatchcase(key, pattern) for pattern in host_wide_patterns)
        if host_wide and in_container and not allow_host_wide:
            skipped.append(f"{key}: host-wide, left alone inside a container (os_tuning_allow_host_wide is false)")
            continue
        current = live.get(key)
        if current is None:
            if key in optional:
                skipped.append(f"{key}: not present in this kernel (module not loaded)")
                continue
            raise AnsibleFilterError(f"os_tuning: the kernel has no setting {key} (check os_tuning_sysctl_extra)")
        if not current.get("writable", True):
            skipped.append(f"{key}: read-only here (it belongs to the host's initial namespace)")
            continue
        if key in raise_only:
            wanted_number = _as_int(key, target, "target")
            live_number = _as_int(key, current["value"], "live value")
            if live_number > wanted_number:
                kept.append(f"{key}: {live_number} is above the target {wanted_number}, left as it is")
                continue
            settings[key] = str(wanted_number)
        elif key in widen_only:
            wanted_low, wanted_high = _as_range(key, target, "target")
            live_low, live_high = _as_range(key, current["value"], "live value")
            low, high = min(wanted_low, live_low), max(wanted_high, live_high)
            if (low, high) != (wanted_low, wanted_high):
                kept.append(
                    f"{key}: widened to {low} {high}, keeping what the host had beyond the target {wanted_low} {wanted_high}"
                )
            settings[key] = f"{low} {high}"
        else:
            settings[key] = _normalise(target)
    drift = [key for key, value in settings.items() if _normalise(live[key]["value"]) != value]
    return {"settings": settings, "kept": kept, "skipped": skipped, "drift": drift}


_CONFIG_HEADER = re.compile(r"^# (/\S+\.conf)$")


def os_tuning_sysctl_overrides(cat_config: str | list[str], own_file: str, keys: list[str]) -> list[str]:
    """Keys of the role that a file read after its own sets again, one note each.

    cat_config is the output of `systemd-analyze cat-config sysctl.d` (as text,
    or as its list of lines): each file under a "# /path/name.conf" header. systemd-sysctl reads the files of every
    sysctl.d folder in the order of their names, so a file whose name sorts after
    the role's own wins at boot, wherever it lives.
    """
    own_name = os.path.basename(own_file)
    wanted = set(keys)
    notes: list[str] = []
    current: str | None = None
    lines = cat_config.splitlines() if isinstance(cat_config, str) else cat_config
    for line in lines:
        header = _CONFIG_HEADER.match(line.strip())
        if header:
            current = header.group(1)
            continue
        text = line.strip()
        if current is None or not text or text[0] in "#;" or "=" not in text:
            continue
        if os.path.basename(current) <= own_name or current == own_file:
            continue
        key, value = (part.strip() for part in text.split("=", 1))
        key = key.lstrip("-").replace("/", ".")
        if key in wanted:
            notes.append(f"{key} is set again by {current} ({value}), which systemd-sysctl reads after {own_file}")
    return notes


def os_tuning_nofile_hard(wanted: Any, default_hard: Any, pid1_hard: Any, systemd_default_hard: Any) -> int | str:
    """The hard open-file limit for every service and login: the wanted one, or more.

    Never lower than what services get now (systemd's DefaultLimitNOFILE, which an
    operator may have raised), nor than systemd's own default where PID 1 may hold
    it (512 Ki, or PID 1's hard limit in a container that caps it).
    """
    values = [default_hard, pid1_hard]
    if any(str(value).strip() == "infinity" for value in values):
        return "infinity"
    current = _as_int("DefaultLimitNOFILE", default_hard, "systemd")
    ceiling = min(_as_int("RLIMIT_NOFILE of PID 1", pid1_hard, "/proc/1/limits"), int(systemd_default_hard))
    return max(_as_int("os_tuning_nofile", wanted, "target"), current, ceiling)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "os_tuning_plan": os_tuning_plan,
            "os_tuning_parse_live": os_tuning_parse_live,
            "os_tuning_probe_sections": os_tuning_probe_sections,
            "os_tuning_sysctl_overrides": os_tuning_sysctl_overrides,
            "os_tuning_nofile_hard": os_tuning_nofile_hard,
        }
