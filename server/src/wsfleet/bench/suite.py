"""``wsfleet bench suite``: what ``make bench`` runs.

For every scenario and round, for every target in turn (wsfleet, the Node ``ws``
peer, the Socket.IO peer, and on request wsfleet on a Redis Cluster; the order
alternates between rounds): a fresh backbone (a redis-server, or a Redis Cluster
on loopback: :mod:`wsfleet.bench.backbone`), K fresh server processes of that
target, the scenario against them, then both stopped. Every target gets the same
workload, the same client and the same number of server processes. Results go to
a JSON file, latency plots to PNG files, and a section with the figures and the
ratios wsfleet / peer and cluster / wsfleet is appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wsfleet
from wsfleet.bench import procstat
from wsfleet.bench.backbone import Backbone, ExistingCluster, LoopbackCluster, SingleRedis
from wsfleet.bench.processes import Managed, free_port, wait_for
from wsfleet.bench.report import ProgressView, plot_latency
from wsfleet.bench.runner import BenchError, BenchOptions, run_async, run_scenario
from wsfleet.bench.stats import LatencyHistogram
from wsfleet.broker import history_key

__all__ = ["add_suite_arguments", "main"]

REPO_ROOT = Path(wsfleet.__file__).resolve().parents[3]
TARGETS = ("wsfleet", "ws", "socketio", "wsfleet-cluster", "wsfleet-cluster-r1")
DEFAULT_TARGETS = ("wsfleet", "ws", "socketio")
PEERS = ("ws", "socketio")
PEER_SCRIPTS = {"ws": "ws-peer.js", "socketio": "socketio-peer.js"}
DIALECT = {
    "wsfleet": "wsfleet",
    "ws": "wsfleet",
    "socketio": "socketio",
    "wsfleet-cluster": "wsfleet",
    "wsfleet-cluster-r1": "wsfleet",
}
NAMES = {
    "wsfleet": "wsfleet",
    "ws": "Node ws",
    "socketio": "Socket.IO",
    "wsfleet-cluster": "wsfleet, cluster",
    "wsfleet-cluster-r1": "wsfleet, cluster + replicas, WAIT 1",
}
# The wsfleet targets on a Redis Cluster the suite starts: replicas per primary. The
# -r1 servers acknowledge a message after WAIT 1 (--publish-replicas 1).
CLUSTERS = {"wsfleet-cluster": 0, "wsfleet-cluster-r1": 1}
CLUSTER_SERVER_FLAGS = {"wsfleet-cluster": (), "wsfleet-cluster-r1": ("--publish-replicas", "1")}
# Clear of the server tests' cluster (7300-7305); bus ports are these + 10000.
CLUSTER_BASE_PORT = 7500


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated, from "
        + ", ".join(TARGETS)
        + " (default: "
        + ",".join(DEFAULT_TARGETS)
        + "); wsfleet-cluster runs wsfleet on a 3-primary Redis "
        "Cluster the suite starts on loopback (--cluster-base-port and the next 2), "
        "wsfleet-cluster-r1 on 3 primaries and 3 replicas (the next 5) with "
        "--publish-replicas 1",
    )
    parser.add_argument("--scenarios", default="connect,fanout,idle")
    parser.add_argument("--servers", type=int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--idle-servers", type=int, default=6, help="server processes for idle (default 6)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of connect and fanout")
    parser.add_argument("--idle-rounds", type=int, default=1)
    parser.add_argument("--connect", type=int, default=20_000, help="connections to ramp to")
    parser.add_argument("--idle", type=int, default=100_000, help="idle connections to hold")
    parser.add_argument("--idle-hold", type=float, default=10.0)
    parser.add_argument("--fanout-rooms", type=int, default=100)
    parser.add_argument("--fanout-clients", type=int, default=20, help="members per room")
    parser.add_argument("--fanout-publishers", type=int, default=10)
    parser.add_argument("--fanout-rate", type=float, default=500.0, help="messages/s in all")
    parser.add_argument("--fanout-duration", type=float, default=20.0)
    parser.add_argument("--fanout-payload", type=int, default=100)
    parser.add_argument("--processes", type=int, default=0, help="client processes (0: auto)")
    parser.add_argument(
        "--redis-cluster",
        metavar="HOST:PORT,...",
        help="run the wsfleet target's servers on this existing Redis Cluster "
        "(--redis-cluster) instead of a redis-server the suite starts; no Redis CPU",
    )
    parser.add_argument(
        "--cluster-base-port",
        type=int,
        default=CLUSTER_BASE_PORT,
        help=f"first loopback port of the clusters the suite starts ({CLUSTER_BASE_PORT}; "
        "their cluster bus: + 10000)",
    )
    parser.add_argument(
        "--publish-replicas",
        type=int,
        default=0,
        help="the wsfleet target's --publish-replicas (0)",
    )
    parser.add_argument("--peers-dir", default=str(REPO_ROOT / "bench-peers"))
    parser.add_argument("--out", default="bench-out", help="folder for JSON and PNG files")
    parser.add_argument("--report", help="append the figures to this Markdown file")
    parser.add_argument("--record-command", help="the command line to record (default: this one)")
    parser.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto")


# Processes


def http_status(port: int, path: str = "/health") -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            status: int = answer.status
            return status
    except OSError as error:
        return getattr(error, "code", 0) or 0


def backbone_for(target: str, args: argparse.Namespace, directory: Path) -> Backbone:
    """A fresh backbone for one measurement of ``target`` (see BACKBONES)."""
    if target in CLUSTERS:
        replicas = CLUSTERS[target]
        ports = range(args.cluster_base_port, args.cluster_base_port + 3 * (replicas + 1))
        return LoopbackCluster(directory, ports, replicas)
    if target == "wsfleet" and args.redis_cluster:
        return ExistingCluster(args.redis_cluster)
    return SingleRedis(directory)


def server_children(
    target: str,
    count: int,
    redis: Backbone,
    peers: Path,
    logs: Path,
    extra: tuple[str, ...] = (),
) -> list[Managed]:
    children = []
    for _ in range(count):
        port = free_port()
        if target not in PEERS:
            argv = [
                sys.executable,
                "-m",
                "wsfleet",
                "serve",
                "--port",
                str(port),
                *redis.server_args(),
                *extra,
                "--instance-id",
                f"bench-{port}",
                # One log line per connection would be a benchmark of logging.
                "--log-level",
                "warning",
                # Publishers send far more than the 50 frames/s a browser may.
                "--rate-limit",
                "1000000",
                "--rate-burst",
                "1000000",
                "--drain-timeout",
                "5",
                "--drain-spread",
                "0",
            ]
            env: dict[str, str] = {}
        else:
            argv = ["node", str(peers / PEER_SCRIPTS[target])]
            if redis.url is None:
                raise BenchError(f"{target} needs a single Redis, not --redis-cluster")
            env = {
                "PORT": str(port),
                "REDIS_URL": redis.url,
                "INSTANCE_ID": f"bench-{port}",
                "EXIT_WITH_PARENT": "1",
            }
        child = Managed(f"{target}:{port}", argv, logs / f"{target}-{port}.log", env)
        child.port = port  # type: ignore[attr-defined]
        children.append(child)
    return children


@contextlib.contextmanager
def started(backbone: Backbone) -> Iterator[Backbone]:
    """The backbone for one measurement, stopped after it whatever happens."""
    try:
        backbone.start()
        yield backbone
    finally:
        backbone.stop()


@contextlib.contextmanager
def running(children: list[Managed]) -> Iterator[list[Managed]]:
    try:
        for child in children:
            child.start()
        for child in children:
            port = child.port  # type: ignore[attr-defined]

            def healthy(child: Managed = child, port: int = port) -> bool:
                if not child.alive():
                    raise BenchError(f"{child.name} exited; see {child.log}")
                return http_status(port) == 200

            wait_for(healthy, f"{child.name} /health")
        yield children
    finally:
        for child in children:
            child.stop()


# The run


@dataclass
class Plan:
    scenario: str
    round: int
    target: str


def make_plan(args: argparse.Namespace, targets: list[str]) -> list[Plan]:
    plan: list[Plan] = []
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        rounds = args.idle_rounds if scenario == "idle" else args.rounds
        for number in range(rounds):
            order = targets if number % 2 == 0 else list(reversed(targets))
            plan.extend(Plan(scenario, number, target) for target in order)
    return plan


def options_for(
    args: argparse.Namespace, step: Plan, urls: list[str], redis: Backbone
) -> BenchOptions:
    options = BenchOptions(
        scenario=step.scenario,
        urls=urls,
        dialect=DIALECT[step.target],
        label=step.target,
        processes=args.processes,
        redis_url=redis.url,
        redis_nodes=redis.redis_nodes(),
        phase_timeout=300,
    )
    if step.scenario == "connect":
        options.connections = args.connect
    elif step.scenario == "idle":
        options.connections = args.idle
        options.hold = args.idle_hold
        options.check = True
        options.timeout = 60.0  # a loaded 2-core host can take long to answer at 100k
    else:
        options.rooms = args.fanout_rooms
        options.clients_per_room = args.fanout_clients
        options.publishers = args.fanout_publishers
        options.rate = args.fanout_rate
        options.duration = args.fanout_duration
        options.payload = args.fanout_payload
    return options


def main(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        print(f"wsfleet bench suite: unknown target(s) {unknown}", file=sys.stderr)
        return 2
    peers = Path(args.peers_dir)
    skipped: dict[str, str] = {}
    for target in [t for t in targets if t in PEERS]:
        if shutil.which("node") is None:
            skipped[target] = "node is not installed"
        elif not (peers / "node_modules").is_dir():
            skipped[target] = f"{peers}/node_modules is missing (npm ci there)"
    if args.redis_cluster:
        for target in [t for t in targets if t in PEERS]:
            skipped[target] = "its peer speaks to a single Redis, not --redis-cluster"
    targets = [t for t in targets if t not in skipped]
    for target, reason in skipped.items():
        print(f"wsfleet bench suite: skipping {target}: {reason}", file=sys.stderr)

    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = args.record_command or shlex.join(["wsfleet", *sys.argv[1:]])
    document: dict[str, Any] = {
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": procstat.machine_description(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "skipped": skipped,
        "runs": [],
    }
    wsfleet_extra = (
        ("--publish-replicas", str(args.publish_replicas)) if args.publish_replicas else ()
    )
    began = time.monotonic()
    try:
        plan = make_plan(args, targets)
        for number, step in enumerate(plan):
            servers = args.idle_servers if step.scenario == "idle" else args.servers
            # A fresh backbone for every measurement: nothing left from the last one.
            redis = backbone_for(step.target, args, logs / f"redis-{number:02d}-{step.target}")
            extra = CLUSTER_SERVER_FLAGS.get(step.target, wsfleet_extra)
            with started(redis):
                children = server_children(step.target, servers, redis, peers, logs, extra)
                print(
                    f"[bench] {step.scenario} round {step.round + 1}: {NAMES[step.target]} "
                    f"({servers} server processes)",
                    file=sys.stderr,
                    flush=True,
                )
                with running(children):
                    path = "/ws" if DIALECT[step.target] == "wsfleet" else ""
                    urls = [f"ws://127.0.0.1:{c.port}{path}" for c in children]  # type: ignore[attr-defined]
                    options = options_for(args, step, urls, redis)
                    options.server_pids = [c.pid for c in children]
                    title = f"{step.scenario} {step.target} r{step.round + 1}"
                    with ProgressView(title, args.progress) as view:
                        result = run_async(run_scenario(options, view))
                if isinstance(redis, LoopbackCluster) and "acked_by_room" in result:
                    result["primaries"] = publishes_per_primary(redis, result["acked_by_room"])
                result["round"] = step.round
                result["target"] = step.target
                result["server_processes"] = servers
                document["runs"].append(result)
                print(f"[bench]   {headline(result)}", file=sys.stderr, flush=True)
                redis.flush()
            if number + 1 < len(plan):
                time.sleep(2)  # let closed sockets leave the kernel's tables
    except (BenchError, KeyboardInterrupt) as error:
        print(f"wsfleet bench suite: stopped: {error!r}", file=sys.stderr)
        document["error"] = repr(error)
    document["seconds"] = round(time.monotonic() - began, 1)
    document["summary"] = summarize_runs(document["runs"], targets)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    plots = write_plots(document["runs"], targets, out, stamp)
    print(f"[bench] results: {json_path}", file=sys.stderr)
    text = markdown(document, targets, json_path, plots)
    print(text)
    if args.report:
        with open(args.report, "a", encoding="utf-8") as report:
            report.write("\n" + text)
        print(f"[bench] appended to {args.report}", file=sys.stderr)
    return 1 if "error" in document else 0


def publishes_per_primary(
    cluster: LoopbackCluster, acked_by_room: dict[str, int]
) -> list[dict[str, Any]]:
    """Rooms and acked publishes per primary, by where each room's slot lives."""
    rooms = sorted(acked_by_room)
    owners = cluster.primary_ports([history_key(room) for room in rooms])
    shares: dict[int, dict[str, int]] = {
        node.port: {"port": node.port, "rooms": 0, "publishes": 0}
        for node in cluster.redis_nodes()
        if node.role == "primary" and node.port is not None
    }
    for room, port in zip(rooms, owners, strict=True):
        if port is not None and port in shares:
            shares[port]["rooms"] += 1
            shares[port]["publishes"] += acked_by_room[room]
    return [shares[port] for port in sorted(shares)]


def headline(result: dict[str, Any]) -> str:
    if result["scenario"] == "fanout":
        latency = result["latency"]
        return (
            f"{result['delivered_per_second']}/s delivered, p99 {latency['p99_ms']} ms, "
            f"lost {result['lost']}, duplicated {result['duplicated']}, "
            f"server CPU {result['server_cpu_cores']} cores"
        )
    text = (
        f"{result['connections']['opened']} open, {result['connects_per_second']}/s, "
        f"{result['memory_per_connection_bytes']} B/connection"
    )
    if "held" in result:
        text += f", {result['held']['answered']} answered after the hold"
    return text


# Figures: (key, label, how to read it from a result, better when "high"/"low")

FIGURES: dict[str, list[tuple[str, str, Callable[[dict[str, Any]], Any], str]]] = {
    "connect": [
        ("opened", "connections opened", lambda r: r["connections"]["opened"], "high"),
        ("failed", "failed", lambda r: r["connections"]["failed"], "low"),
        ("cps", "connects per second", lambda r: r["connects_per_second"], "high"),
        ("hs50", "handshake p50 (ms)", lambda r: r["handshake_latency"]["p50_ms"], "low"),
        ("hs99", "handshake p99 (ms)", lambda r: r["handshake_latency"]["p99_ms"], "low"),
        (
            "mem",
            "server memory per connection (B)",
            lambda r: r["memory_per_connection_bytes"],
            "low",
        ),
    ],
    "fanout": [
        ("members", "members joined", lambda r: r["connections"]["members"], "high"),
        ("dps", "delivered messages per second", lambda r: r["delivered_per_second"], "high"),
        ("p50", "latency p50 (ms)", lambda r: r["latency"]["p50_ms"], "low"),
        ("p90", "latency p90 (ms)", lambda r: r["latency"]["p90_ms"], "low"),
        ("p99", "latency p99 (ms)", lambda r: r["latency"]["p99_ms"], "low"),
        ("p999", "latency p99.9 (ms)", lambda r: r["latency"]["p99.9_ms"], "low"),
        ("ack50", "publish to ack p50 (ms)", lambda r: r["ack_latency"]["p50_ms"], "low"),
        ("ack99", "publish to ack p99 (ms)", lambda r: r["ack_latency"]["p99_ms"], "low"),
        ("lost", "lost", lambda r: r["lost"], "low"),
        ("dup", "duplicated", lambda r: r["duplicated"], "low"),
        ("cpu", "server CPU (cores)", lambda r: r["server_cpu_cores"], "low"),
        (
            "eff",
            "deliveries per server CPU second",
            lambda r: r["deliveries_per_server_cpu_second"],
            "high",
        ),
        ("redis", "Redis CPU, all nodes (cores)", lambda r: r["redis_cpu_cores"], "low"),
        (
            "rpk",
            "Redis CPU per 1,000 deliveries (ms)",
            lambda r: r["redis_cpu_ms_per_1000_deliveries"],
            "low",
        ),
        *(
            (
                f"share{index}",
                f"primary {index + 1}: share of the primaries' CPU (%)",
                lambda r, index=index: _primary_share(r, index),
                "none",
            )
            for index in range(3)
        ),
        (
            "pcpu",
            "primaries' CPU seconds, max / min",
            lambda r: r["primaries_cpu_spread"],
            "low",
        ),
        (
            "pcmd",
            "primaries' commands processed, max / min",
            lambda r: r["primaries_commands_spread"],
            "low",
        ),
        (
            "ppub",
            "primaries' publishes (rooms' slots), max / min",
            lambda r: _publish_spread(r),
            "low",
        ),
    ],
    "idle": [
        ("opened", "connections opened", lambda r: r["connections"]["opened"], "high"),
        (
            "answered",
            "open and answering a ping after the hold",
            lambda r: r.get("held", {}).get("answered"),
            "high",
        ),
        (
            "mem",
            "server memory per connection (B)",
            lambda r: r["memory_per_connection_bytes"],
            "low",
        ),
        ("rss", "server RSS, all processes (MiB)", lambda r: r["server_rss_after_mib"], "low"),
        ("cps", "connects per second", lambda r: r["connects_per_second"], "high"),
    ],
}


def _primary_share(result: dict[str, Any], index: int) -> float | None:
    """The ``index``-th primary's share (%) of all primaries' CPU time; None if no cluster."""
    cpu: list[float | None] = [
        n["cpu_seconds"] for n in result["redis_nodes"] if n["role"] == "primary"
    ]
    known = [c for c in cpu if c is not None]
    if index >= len(cpu) or len(known) < len(cpu) or sum(known) <= 0:
        return None
    return round(100 * known[index] / sum(known), 1)


def _publish_spread(result: dict[str, Any]) -> float | None:
    publishes: list[int] = [share["publishes"] for share in result.get("primaries", [])]
    if len(publishes) < 2 or min(publishes) <= 0:
        return None
    return round(max(publishes) / min(publishes), 2)


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float)]
    if not numbers:
        return None
    return statistics.median(numbers)


def summarize_runs(runs: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    """Per scenario and target: the median of each figure over the rounds."""
    summary: dict[str, Any] = {}
    for scenario, figures in FIGURES.items():
        for target in targets:
            mine = [r for r in runs if r["scenario"] == scenario and r["target"] == target]
            if not mine:
                continue
            values = {}
            for key, _, read, _ in figures:
                rounds = []
                for run in mine:
                    try:
                        rounds.append(read(run))
                    except (KeyError, TypeError):
                        rounds.append(None)
                values[key] = {"median": _median(rounds), "rounds": rounds}
            summary.setdefault(scenario, {})[target] = values
    return summary


def write_plots(
    runs: list[dict[str, Any]], targets: list[str], out: Path, stamp: str
) -> dict[str, Path]:
    plots: dict[str, Path] = {}
    for scenario, which, title in (
        ("fanout", "latency", "fanout end-to-end latency"),
        ("connect", "handshake", "handshake latency"),
    ):
        series = []
        for target in targets:
            merged = LatencyHistogram()
            for run in runs:
                if run["scenario"] == scenario and run["target"] == target:
                    merged.merge(LatencyHistogram.from_json(run["histograms"][which]))
            if merged.values:
                series.append((NAMES[target], merged))
        if series:
            path = out / f"bench-{stamp}-{scenario}.png"
            try:
                plot_latency(series, path, title)
            except RuntimeError as error:
                print(f"[bench] no plot: {error}", file=sys.stderr)
                continue
            plots[scenario] = path
    return plots


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{int(value):,}"


def _ratio(mine: Any, theirs: Any) -> str:
    if not isinstance(mine, int | float) or not isinstance(theirs, int | float):
        return "-"
    if theirs == 0:
        return "=" if mine == 0 else "-"
    return f"{mine / theirs:.2f}"


def markdown(
    document: dict[str, Any], targets: list[str], json_path: Path, plots: dict[str, Path]
) -> str:
    machine = document["machine"]
    settings = document["settings"]
    lines = [
        f"## Run of {document['started']}",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{(machine['memory_bytes'] or 0) / 2**30:.0f} GiB, {machine['os']}, kernel "
        f"{machine['kernel']}; RLIMIT_NOFILE {machine['nofile']}; load average at start "
        f"{' '.join(machine['loadavg'] or [])}",
        f"- Software: Python {machine['python']} (websockets {machine['websockets']}), "
        f"Node {machine['node']}, {machine['redis']}",
        f"- Command: `{document['command']}` ({document['seconds']:.0f} s)",
        f"- Raw results: `{json_path}`"
        + "".join(f"; {name} plot: `{path}`" for name, path in plots.items()),
    ]
    if document.get("skipped"):
        for target, reason in document["skipped"].items():
            lines.append(f"- Not measured: {NAMES[target]} ({reason})")
    if document.get("error"):
        lines.append(f"- **Stopped early**: {document['error']}")
    peers = [t for t in targets if t in PEERS]
    clusters = [t for t in targets if t in CLUSTERS]
    sizes = {
        "connect": f"{settings['connect']:,} connections, {settings['servers']} server processes, "
        f"{settings['rounds']} rounds",
        "fanout": f"{settings['fanout_rooms']} rooms x {settings['fanout_clients']} members "
        f"({settings['fanout_rooms'] * settings['fanout_clients']:,} connections), "
        f"{settings['fanout_publishers']} publishers, {settings['fanout_rate']:,.0f} messages/s "
        f"for {settings['fanout_duration']:.0f} s, {settings['fanout_payload']} B content, "
        f"{settings['servers']} server processes, {settings['rounds']} rounds",
        "idle": f"{settings['idle']:,} connections held {settings['idle_hold']:.0f} s, "
        f"{settings['idle_servers']} server processes, {settings['idle_rounds']} round(s)",
    }
    for scenario, figures in FIGURES.items():
        table = document["summary"].get(scenario)
        if not table or ("wsfleet" not in table and not table):
            continue
        lines += ["", f"### {scenario}: {sizes[scenario]}", ""]
        header = ["figure", *[NAMES[t] for t in targets if t in table]]
        header += [f"wsfleet / {NAMES[p]}" for p in peers if p in table and "wsfleet" in table]
        header += [f"{NAMES[c]} / wsfleet" for c in clusters if c in table and "wsfleet" in table]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for key, label, _, _ in figures:
            row = [label]
            for target in targets:
                if target in table:
                    cell = table[target][key]
                    shown = _show(cell["median"])
                    if len(cell["rounds"]) > 1:
                        shown += " (" + " / ".join(_show(v) for v in cell["rounds"]) + ")"
                    row.append(shown)
            for peer in peers:
                if peer in table and "wsfleet" in table:
                    row.append(_ratio(table["wsfleet"][key]["median"], table[peer][key]["median"]))
            for cluster in clusters:
                if cluster in table and "wsfleet" in table:
                    row.append(
                        _ratio(table[cluster][key]["median"], table["wsfleet"][key]["median"])
                    )
            if all(table[t][key]["median"] is None for t in targets if t in table):
                continue  # e.g. the primaries' rows in a run without a cluster
            lines.append("| " + " | ".join(row) + " |")
        if scenario == "fanout" and clusters:
            lines += ["", *backbone_notes(targets, settings)]
    lines += ["", *targets_verdict(document["summary"]), ""]
    return "\n".join(lines)


def backbone_notes(targets: list[str], settings: dict[str, Any]) -> list[str]:
    """What each fanout column ran on."""
    single = (
        "an existing cluster (" + settings["redis_cluster"] + "), not measured"
        if settings.get("redis_cluster")
        else "one redis-server"
    )
    base = settings["cluster_base_port"]
    notes = {
        "wsfleet": f"{single}"
        + (
            f", servers with --publish-replicas {settings['publish_replicas']}"
            if settings.get("publish_replicas")
            else ""
        ),
        "wsfleet-cluster": f"a Redis Cluster of 3 primaries (127.0.0.1:{base}-{base + 2}, "
        "`redis-cli --cluster create`, slots split evenly), no replicas",
        "wsfleet-cluster-r1": f"3 primaries and 3 replicas (127.0.0.1:{base}-{base + 5}), "
        "servers with --publish-replicas 1: a publish is acked after WAIT 1",
        "ws": "one redis-server",
        "socketio": "one redis-server",
    }
    lines = ["Backbones (a fresh one for every measurement; Redis CPU is summed over every node):"]
    lines += [f"- {NAMES[t]}: {notes[t]}" for t in targets]
    return lines


def _verdict(ratio: float | None, bound: float, *, at_least: bool) -> str:
    if ratio is None:
        return "not measured"
    met = ratio >= bound if at_least else ratio <= bound
    return "met" if met else "missed"


def _plain_ratio(mine: Any, theirs: Any) -> float | None:
    if isinstance(mine, int | float) and isinstance(theirs, int | float) and theirs:
        return float(mine) / float(theirs)
    return None


# Issue 12's targets against Node ws: (scenario, figure, label, bound, at least?).
GOALS_VS_NODE: tuple[tuple[str, str, str, float, bool], ...] = (
    ("fanout", "eff", "deliveries per server CPU second", 1.2, True),
    ("fanout", "p99", "latency p99", 1.0, False),
    ("fanout", "p999", "latency p99.9", 1.0, False),
    ("fanout", "rpk", "Redis CPU per delivery", 1.2, False),
    ("connect", "cps", "connects per second", 1.0, True),
    ("connect", "hs99", "handshake p99", 1.0, False),
)


def targets_verdict(summary: dict[str, Any]) -> list[str]:
    """Issue 12's targets against Node ws (BENCHMARKS.md), met or missed, in this run."""
    lines = ["Targets in this run (wsfleet / Node ws):"]
    for scenario, key, label, bound, at_least in GOALS_VS_NODE:
        table = summary.get(scenario, {})
        if "wsfleet" not in table or "ws" not in table or key not in table["wsfleet"]:
            continue
        ratio = _plain_ratio(table["wsfleet"][key]["median"], table["ws"][key]["median"])
        shown = "-" if ratio is None else f"{ratio:.2f}"
        sign = ">=" if at_least else "<="
        lines.append(
            f"- {scenario} {label}: {shown} ({sign} {bound:g}: "
            f"{_verdict(ratio, bound, at_least=at_least)})"
        )
    fanout = summary.get("fanout", {})
    for cluster in [t for t in CLUSTERS if t in fanout and "wsfleet" in fanout]:
        mine, single = fanout[cluster], fanout["wsfleet"]
        lines.append(
            f"- {NAMES[cluster]} vs one Redis: delivered/s ratio "
            f"{_ratio(mine['dps']['median'], single['dps']['median'])}, Redis CPU per "
            f"1,000 deliveries {_show(mine['rpk']['median'])} ms vs "
            f"{_show(single['rpk']['median'])} ms, primaries' CPU max / min "
            f"{_show(mine['pcpu']['median'])}, commands max / min "
            f"{_show(mine['pcmd']['median'])}, p50 / p99 "
            f"{_show(mine['p50']['median'])} / {_show(mine['p99']['median'])} ms vs "
            f"{_show(single['p50']['median'])} / {_show(single['p99']['median'])} ms, "
            f"publish to ack p50 / p99 {_show(mine['ack50']['median'])} / "
            f"{_show(mine['ack99']['median'])} ms vs {_show(single['ack50']['median'])} / "
            f"{_show(single['ack99']['median'])} ms"
        )
    idle = summary.get("idle", {}).get("wsfleet")
    if idle is not None:
        memory = idle["mem"]["median"]
        if isinstance(memory, int | float):
            verdict = "met" if memory <= 6 * 1024 else f"missed by {memory - 6 * 1024:,.0f} B"
            lines.append(f"- idle memory: {memory:,.0f} B per connection vs 6,144 B: {verdict}")
        answered = idle["answered"]["median"]
        if isinstance(answered, int | float):
            verdict = "met" if answered >= 100_000 else f"missed ({answered:,.0f})"
            lines.append(
                f"- 100,000 concurrent connections: {answered:,.0f} held and answering: {verdict}"
            )
    return lines
