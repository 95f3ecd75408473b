#!/usr/bin/python3
"""Write wsfleet metrics for node_exporter's textfile collector, atomically.

- wsfleet_unit_open_fds / wsfleet_unit_max_fds: open files and the soft limit
  of the busiest process (highest open/limit ratio) of each systemd unit named
  with --unit (nginx's workers, Redis and server instances), and
  wsfleet_unit_resident_bytes, the unit's resident memory. (The servers'
  sandbox hides /proc/stat, without which their own process_* metrics are
  missing.)
- wsfleet_nginx_access_log_lines_total / wsfleet_nginx_upstream_errors_total:
  lines of nginx's JSON access log read so far, and those whose upstream
  answered 5xx or could not be reached (502, 504), across rotations: the read
  offset and the counts are kept in --state-dir.
Run by wsfleet-textfile-metrics.timer as root (other users' /proc/PID/fd).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path


def unit_processes(unit: str) -> list[int]:
    """The unit's main process and its children."""
    main = subprocess.run(
        ["systemctl", "show", "--property=MainPID", "--value", unit],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not main.isdigit() or main == "0":
        return []
    pids = [int(main)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent's pid is the second field after the command name in parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pids[0]:
            pids.append(int(entry.name))
    return pids


def open_files(pid: int) -> tuple[int, int] | None:
    """(open files, soft limit) of one process, or None when it is gone."""
    try:
        count = len(os.listdir(f"/proc/{pid}/fd"))
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return count, int(line.split()[3])
    except (OSError, ValueError):
        return None
    return None


def resident_bytes(pid: int) -> int:
    """Resident memory of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return 0
    return 0


def unit_lines(units: list[str]) -> list[str]:
    lines = [
        "# HELP wsfleet_unit_resident_bytes Resident memory of the unit's processes.",
        "# TYPE wsfleet_unit_resident_bytes gauge",
        "# HELP wsfleet_unit_open_fds Open files of the unit's busiest process.",
        "# TYPE wsfleet_unit_open_fds gauge",
        "# HELP wsfleet_unit_max_fds Open-file soft limit of the unit's busiest process.",
        "# TYPE wsfleet_unit_max_fds gauge",
    ]
    for unit in units:
        pids = unit_processes(unit)
        readings = [r for r in map(open_files, pids) if r and r[1] > 0]
        if not readings:
            continue
        count, limit = max(readings, key=lambda r: r[0] / r[1])
        lines.append(f'wsfleet_unit_open_fds{{unit="{unit}"}} {count}')
        lines.append(f'wsfleet_unit_max_fds{{unit="{unit}"}} {limit}')
        lines.append(f'wsfleet_unit_resident_bytes{{unit="{unit}"}} {sum(map(resident_bytes, pids))}')
    return lines


def is_upstream_error(record: dict[str, object]) -> bool:
    """A 502/504 answer, or any 5xx from an upstream (several when nginx retried)."""
    if record.get("status") in (502, 504):
        return True
    statuses = str(record.get("upstream_status", "")).replace(":", ",").split(",")
    return any(s.strip().startswith("5") for s in statuses)


def access_log_lines(path: Path, state_file: Path) -> list[str]:
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        state = {"inode": 0, "offset": 0, "lines": 0, "errors": 0}
    try:
        with path.open("rb") as log:
            inode = os.fstat(log.fileno()).st_ino
            size = os.fstat(log.fileno()).st_size
            # A new file (rotated) or a truncated one is read from its start.
            offset = state["offset"] if inode == state["inode"] and size >= state["offset"] else 0
            log.seek(offset)
            for raw in log:
                if not raw.endswith(b"\n"):
                    break  # a line still being written: next time
                offset += len(raw)
                state["lines"] += 1
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and is_upstream_error(record):
                    state["errors"] += 1
            state["inode"], state["offset"] = inode, offset
    except FileNotFoundError:
        pass
    state_file.write_text(json.dumps(state))
    return [
        "# HELP wsfleet_nginx_access_log_lines_total Lines of nginx's JSON access log read.",
        "# TYPE wsfleet_nginx_access_log_lines_total counter",
        f"wsfleet_nginx_access_log_lines_total {state['lines']}",
        "# HELP wsfleet_nginx_upstream_errors_total Requests whose upstream failed (5xx, 502, 504).",
        "# TYPE wsfleet_nginx_upstream_errors_total counter",
        f"wsfleet_nginx_upstream_errors_total {state['errors']}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--unit", action="append", default=[])
    parser.add_argument("--nginx-access-log", type=Path)
    arguments = parser.parse_args()

    lines = unit_lines(arguments.unit)
    if arguments.nginx_access_log:
        lines += access_log_lines(arguments.nginx_access_log, arguments.state_dir / "nginx-access-log.json")
    # Write next to the target and rename: the collector never reads half a file.
    with tempfile.NamedTemporaryFile("w", dir=arguments.output.parent, delete=False, suffix=".tmp") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(out.name, 0o644)
    os.replace(out.name, arguments.output)


if __name__ == "__main__":
    main()
