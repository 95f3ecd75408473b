"""Helpers of scripts/bench-lab.sh: the lab's targets and processes, and the report.

    bench_lab.py targets                 the lab's load balancer URLs, from inventories/lab
    bench_lab.py pids GROUP PATTERN      host PIDs of a lab group's processes
    bench_lab.py settings FILE           what bench-lab.sh ran (BENCH_* variables), as JSON
    bench_lab.py report OUT COMMAND      the Markdown section from the runs in OUT

Run with the project's virtualenv (it imports wsfleet for the machine description).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def inventory() -> dict[str, Any]:
    listing = subprocess.run(
        [str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(ROOT / "inventories/lab"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(listing.stdout)
    return result


def group_hosts(data: dict[str, Any], group: str) -> list[str]:
    return list(data.get(group, {}).get("hosts", []))


def targets() -> None:
    """Lines "LABEL URL": the load balancer on its private address, and as published here."""
    data = inventory()
    hostvars = data["_meta"]["hostvars"]
    balancers = group_hosts(data, "loadbalancers")
    if not balancers:
        sys.exit("inventories/lab has no host in loadbalancers")
    first = hostvars[balancers[0]]
    port = int(first.get("nginx_lb_http_port", 80))
    suffix = "" if port == 80 else f":{port}"
    print(f"lb-private ws://{first['wsfleet_private_address']}{suffix}/ws")
    smoke = first.get("wsfleet_smoke_url")
    if smoke:
        print(f"lb-published {smoke}")


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pids(group: str, pattern: str) -> None:
    """Host PIDs of the processes of every container of GROUP whose command line matches.

    The lab's containers share this machine's kernel: their processes are in this
    machine's /proc under host PIDs, so the bench client can read their CPU time
    and memory as it does for servers on loopback. A container is told by its PID
    namespace (that of its init process, from `docker inspect`).
    """
    wanted = re.compile(pattern)
    found: list[int] = []
    for host in group_hosts(inventory(), group):
        init = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", host],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not init.isdigit() or init == "0":
            sys.exit(f"container {host} is not running")
        namespace = _pid_namespace(init)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or _pid_namespace(entry.name) != namespace:
                continue
            try:
                command = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if wanted.search(command):
                found.append(int(entry.name))
    print(" ".join(str(pid) for pid in sorted(found)))


def settings(path: Path) -> None:
    """The run's settings, from bench-lab.sh's BENCH_* variables, and the lab's shape."""
    data = inventory()
    env = os.environ
    urls = dict(line.split(" ", 1) for line in env["BENCH_URLS"].splitlines() if line.strip())
    servers = env["BENCH_SERVERS"].split()
    urls["loopback"] = f"ws://127.0.0.1:PORT/ws x {len(servers)} (started by the suite)"
    document = {
        "targets": env["BENCH_TARGETS"].split(),
        "urls": urls,
        "started": env["BENCH_STARTED"],
        "loadavg": env["BENCH_LOADAVG"].split(),
        "loadavg_after": env["BENCH_LOADAVG_AFTER"].split(),
        "lb_host": ", ".join(group_hosts(data, "loadbalancers")),
        "nginx_processes": len(env["BENCH_NGINX"].split()),
        "servers": len(servers),
        "server_hosts": len(group_hosts(data, "ws_servers")),
        "connect": int(env["BENCH_CONNECT"]),
        "rooms": int(env["BENCH_ROOMS"]),
        "members": int(env["BENCH_MEMBERS"]),
        "publishers": int(env["BENCH_PUBLISHERS"]),
        "duration": float(env["BENCH_DURATION"]),
        "rates": [int(rate) for rate in env["BENCH_RATES"].split()],
        "failures": [item for item in env["BENCH_FAILURES"].split(";") if item],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# The report


def _show(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".strip()


def _load(out: Path) -> dict[str, dict[str, Any]]:
    """Results by run name: lab runs are one JSON each, loopback runs come from suite files."""
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("lab-*.json")):
        runs[path.stem.removeprefix("lab-")] = json.loads(path.read_text())
    for folder in sorted(out.glob("loopback-*")):
        for path in sorted(folder.glob("bench-*.json")):
            for run in json.loads(path.read_text())["runs"]:
                if run["scenario"] == "connect":
                    runs["loopback-connect"] = run
                else:
                    runs[f"loopback-fanout-{int(run['options']['rate'])}"] = run
    return runs


def _rows_connect(run: dict[str, Any]) -> dict[str, str]:
    connections = run["connections"]
    handshake = run["handshake_latency"]
    return {
        "opened / requested": f"{connections['opened']:,} / {connections['requested']:,}",
        "failed": _show(connections["failed"]),
        "connects/s": _show(run["connects_per_second"]),
        "handshake p50": _show(handshake.get("p50_ms"), "ms"),
        "handshake p99": _show(handshake.get("p99_ms"), "ms"),
        "server CPU (ramp + 2 s)": _show(run.get("server_cpu_seconds") or _server_cpu(run), "s"),
        "proxy CPU (ramp + 2 s)": _show(run.get("proxy_cpu_seconds"), "s"),
        "client CPU": _show(run["client_cpu_seconds"], "s"),
    }


def _server_cpu(run: dict[str, Any]) -> float | None:
    # Results of a bench client older than server_cpu_seconds in connect runs.
    rows = run.get("servers") or []
    return round(sum(row["cpu_seconds"] for row in rows), 3) if rows else None


def _rows_fanout(run: dict[str, Any]) -> dict[str, str]:
    latency = run["latency"]
    connections = run["connections"]
    return {
        "members / publishers": f"{connections['members']:,} / {connections['publishers']}",
        "published (acked)": f"{run['published']['sent']:,} ({run['published']['acked']:,})",
        "delivered/s": _show(run["delivered_per_second"]),
        "latency p50": _show(latency.get("p50_ms"), "ms"),
        "latency p99": _show(latency.get("p99_ms"), "ms"),
        "latency p99.9": _show(latency.get("p99.9_ms"), "ms"),
        "latency max": _show(latency.get("max_ms"), "ms"),
        "lost": _show(run["lost"]),
        "duplicated": _show(run["duplicated"]),
        "failed connections": _show(connections["failed"]),
        "server CPU": _show(run["server_cpu_cores"], "cores"),
        "proxy CPU": _show(run.get("proxy_cpu_cores"), "cores"),
        "Redis CPU": _show(run["redis_cpu_cores"], "cores"),
        "client CPU": _show(run["client_cpu_seconds"], "s"),
    }


def _table(columns: list[tuple[str, dict[str, Any] | None]], rows_of: Any) -> list[str]:
    rendered = [(name, rows_of(run) if run else {}) for name, run in columns]
    keys: list[str] = []
    for _, rows in rendered:
        keys += [key for key in rows if key not in keys]
    lines = ["| | " + " | ".join(name for name, _ in rendered) + " |", "|---" + "|---:" * len(rendered) + "|"]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(rows.get(key, "not run") for _, rows in rendered) + " |")
    return lines


def report(out: Path, command: str) -> None:
    from wsfleet.bench import procstat

    runs = _load(out)
    settings = json.loads((out / "settings.json").read_text())
    machine = procstat.machine_description()
    columns = [("loopback", "loopback"), ("LB, private address", "lb-private"), ("LB, published port", "lb-published")]
    columns = [(name, key) for name, key in columns if key in settings["targets"]]
    urls = settings["urls"]
    lines = [
        f"## Through the lab's load balancer ({time.strftime('%Y-%m-%d', time.gmtime())})",
        "",
        f"- Command: `{command}` (raw results: `{out}`)",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{round((machine['memory_bytes'] or 0) / 2**30)} GiB, {machine['os']}, kernel {machine['kernel']}, "
        f"Python {machine['python']}, websockets {machine['websockets']}; "
        f"load average before {' '.join(settings['loadavg'])}, after {' '.join(settings['loadavg_after'])}",
        f"- Started {settings['started']}; client, load balancer, servers and Redis share these cores.",
        "- Targets:",
    ]
    for _, key in columns:
        lines.append(f"  - {key}: {urls[key]}")
    lines += [
        f"- Lab: nginx on {settings['lb_host']} ({settings['nginx_processes']} processes), "
        f"{settings['servers']} wsfleet instances on {settings['server_hosts']} hosts, one Redis; "
        f"loopback: the same number of `wsfleet serve` processes ({settings['servers']}) and a "
        "redis-server, started by `wsfleet bench suite`.",
        f"- Sizes: connect {settings['connect']:,}; fanout {settings['rooms']} rooms x "
        f"{settings['members']} members, {settings['publishers']} publishers, "
        f"{settings['duration']:g} s at each rate, payload 100 B.",
        "- CPU: the lab's processes are read from this machine's /proc by their host PIDs "
        "(found in each container's PID namespace), as the loopback ones are; nginx's is "
        "every nginx process of the load balancer (`--proxy-pid`), plus, for the published "
        'port, the docker-proxy that holds it: "proxy CPU".',
        "",
        "### connect",
        "",
        *_table([(name, runs.get(f"{key}-connect")) for name, key in columns], _rows_connect),
    ]
    for rate in settings["rates"]:
        lines += [
            "",
            f"### fanout at {rate:,} messages/s",
            "",
            *_table([(name, runs.get(f"{key}-fanout-{rate}")) for name, key in columns], _rows_fanout),
        ]
    failures = settings.get("failures") or []
    if failures:
        lines += ["", "Runs that exited non-zero or were skipped: " + ", ".join(failures) + "."]
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "targets":
        targets()
    elif len(sys.argv) == 4 and sys.argv[1] == "pids":
        pids(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "settings":
        settings(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
