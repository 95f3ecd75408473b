"""``wsfleet bench``: command-line flags, and running one scenario or the suite."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_bench_parser", "expand_urls", "main", "parse_sources"]

SCENARIOS = {
    "churn": "fanout while members leave and resume: duplicates, gaps, loss, resume latency",
    "connect": "ramp to N connections: connects/s, handshake latency, failures, server memory",
    "fanout": "R rooms x C members, P publishers at a rate: deliveries/s, latency, loss, CPU",
    "idle": "hold N idle connections, ping each: what K servers hold and at what memory",
}


def expand_urls(values: list[str]) -> list[str]:
    """Split commas and expand port ranges: ``ws://127.0.0.1:8801-8803/ws`` is three URLs."""
    urls: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            match = re.fullmatch(r"(ws://[^/:]+:)(\d+)-(\d+)(/.*)?", item)
            if match is None:
                urls.append(item)
                continue
            first, last = int(match.group(2)), int(match.group(3))
            if last < first:
                raise argparse.ArgumentTypeError(f"bad port range in {item!r}")
            urls.extend(
                f"{match.group(1)}{port}{match.group(4) or ''}" for port in range(first, last + 1)
            )
    return urls


def parse_sources(value: str) -> list[str]:
    """``8`` (127.0.0.2 to 127.0.0.9), ``127.0.0.2-127.0.0.9``, or a comma list."""
    value = value.strip()
    if value in ("", "none"):
        return []
    if value.isdigit():
        return [f"127.0.0.{2 + index}" for index in range(int(value))]
    try:
        if "-" in value and "," not in value:
            low, high = (ipaddress.IPv4Address(part.strip()) for part in value.split("-", 1))
            return [str(ipaddress.IPv4Address(n)) for n in range(int(low), int(high) + 1)]
        return [str(ipaddress.IPv4Address(part.strip())) for part in value.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"bad --source-addresses {value!r}: {error}") from None


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return number


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        required=True,
        help="target, repeatable or comma-separated; a port range expands: "
        "ws://127.0.0.1:8801-8806/ws",
    )
    parser.add_argument(
        "--dialect",
        choices=("wsfleet", "socketio"),
        default="wsfleet",
        help="wsfleet: PROTOCOL.md (wsfleet and the Node ws peer); socketio: Socket.IO over "
        "a raw WebSocket (default wsfleet)",
    )
    parser.add_argument("--label", help="name of the target in the output (default: dialect)")
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="client processes (default: as few as allow <= 18,000 connections each)",
    )
    parser.add_argument(
        "--source-addresses",
        type=parse_sources,
        default=None,
        metavar="ADDRS",
        help="source addresses: a count N (127.0.0.2..), a range A-B or a list; "
        "default: one per client process on loopback",
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, default=200, help="handshakes in flight per process"
    )
    parser.add_argument(
        "--connect-rate", type=float, default=0.0, help="connects per second in all (0: max)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per handshake/join")
    parser.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server PID to measure (repeatable; default: found by the targets' ports)",
    )
    parser.add_argument(
        "--proxy-pid",
        type=int,
        action="append",
        default=[],
        help="PID of a process between client and servers (a load balancer's nginx) whose "
        "CPU to measure with the servers' (repeatable)",
    )
    parser.add_argument("--redis-url", help="Redis of the servers, to measure its CPU")
    parser.add_argument("--redis-pid", type=int, help="Redis PID (default: found by its port)")
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON ('-': stdout)")
    parser.add_argument("--plot", metavar="PNG", help="write a latency histogram plot")
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "off"),
        default="auto",
        help="progress display (default: a bar on a terminal, lines otherwise)",
    )


def add_bench_parser(commands: Any) -> None:
    """Add ``bench`` and its scenarios to the ``wsfleet`` command's subparsers."""
    bench = commands.add_parser(
        "bench",
        help="load generator and benchmarks",
        description="Load generator speaking PROTOCOL.md, in several processes when one is "
        "not enough. Send load only to servers you run yourself.",
    )
    scenarios = bench.add_subparsers(dest="scenario", required=True)

    connect = scenarios.add_parser("connect", help=SCENARIOS["connect"])
    _common(connect)
    connect.add_argument("--connections", "-n", type=_positive_int, default=1000)

    idle = scenarios.add_parser("idle", help=SCENARIOS["idle"])
    _common(idle)
    idle.add_argument("--connections", "-n", type=_positive_int, default=1000)
    idle.add_argument("--hold", type=float, default=10.0, help="seconds to hold (default 10)")

    fanout = scenarios.add_parser("fanout", help=SCENARIOS["fanout"])
    _common(fanout)
    fanout.add_argument("--rooms", type=_positive_int, default=10)
    fanout.add_argument("--clients-per-room", type=_positive_int, default=10)
    fanout.add_argument("--publishers", type=_positive_int, default=2)
    fanout.add_argument("--rate", type=float, default=100.0, help="messages/s, all publishers")
    fanout.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    fanout.add_argument("--payload", type=int, default=100, help="bytes of content (default 100)")

    from wsfleet.bench.suite import add_suite_arguments

    churn = scenarios.add_parser("churn", help=SCENARIOS["churn"])
    _common(churn)
    churn.add_argument("--rooms", type=_positive_int, default=10)
    churn.add_argument("--clients-per-room", type=_positive_int, default=10)
    churn.add_argument(
        "--churners", type=int, default=2, help="members per room that leave and resume (2)"
    )
    churn.add_argument("--publishers", type=_positive_int, default=2)
    churn.add_argument("--rate", type=float, default=100.0, help="messages/s, all publishers")
    churn.add_argument("--duration", type=float, default=10.0, help="seconds of publishing")
    churn.add_argument("--payload", type=int, default=100, help="bytes of content (default 100)")

    suite = scenarios.add_parser(
        "suite",
        help="make bench: redis, servers and Node peers on loopback, every scenario, a report",
    )
    add_suite_arguments(suite)


def options_from(args: argparse.Namespace) -> Any:
    from wsfleet.bench.runner import BenchOptions

    options = BenchOptions(
        scenario=args.scenario,
        urls=expand_urls(args.url),
        dialect=args.dialect,
        label=args.label,
        processes=args.processes,
        sources=args.source_addresses,
        concurrency=args.concurrency,
        connect_rate=args.connect_rate,
        timeout=args.timeout,
        server_pids=args.server_pid,
        proxy_pids=args.proxy_pid,
        redis_pid=args.redis_pid,
        redis_url=args.redis_url,
    )
    if args.scenario in ("connect", "idle"):
        options.connections = args.connections
    if args.scenario == "idle":
        options.hold = args.hold
        options.check = True
    if args.scenario == "churn":
        options.churners = args.churners
    if args.scenario in ("fanout", "churn"):
        options.rooms = args.rooms
        options.clients_per_room = args.clients_per_room
        options.publishers = args.publishers
        options.rate = args.rate
        options.duration = args.duration
        options.payload = args.payload
    return options


def write_outputs(result: dict[str, Any], json_path: str | None, plot_path: str | None) -> None:
    from wsfleet.bench.report import plot_latency
    from wsfleet.bench.stats import LatencyHistogram

    if json_path == "-":
        json.dump(result, sys.stdout, indent=2)
        print()
    elif json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if plot_path:
        which = "latency" if result["scenario"] in ("fanout", "churn") else "handshake"
        histogram = LatencyHistogram.from_json(result["histograms"][which])
        title = "end-to-end latency" if which == "latency" else "handshake latency"
        plot_latency([(str(result["label"]), histogram)], Path(plot_path), title)


def main(args: argparse.Namespace) -> int:
    """Run ``wsfleet bench SCENARIO``; returns the exit status."""
    if args.scenario == "suite":
        from wsfleet.bench.suite import main as suite_main

        return suite_main(args)

    from wsfleet.bench.report import ProgressView, render_table
    from wsfleet.bench.runner import BenchError, run_async

    options = options_from(args)
    if args.plot and not args.plot.endswith(".png"):
        print("wsfleet bench: --plot needs a .png file name", file=sys.stderr)
        return 2
    try:
        with ProgressView(f"{options.label or options.dialect}", args.progress) as view:
            result = run_async(_run(options, view))
    except BenchError as error:
        print(f"wsfleet bench: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    render_table(result, sys.stderr if args.json == "-" else sys.stdout)
    write_outputs(result, args.json, args.plot)
    if result["scenario"] == "fanout" and (result["lost"] or result["duplicated"]):
        return 3  # the one outcome that is a failure whatever the speed
    if result["scenario"] == "churn" and any(
        result[key] for key in ("lost", "duplicated", "gaps", "out_of_order")
    ):
        return 3
    return 0


async def _run(options: Any, view: Any) -> dict[str, Any]:
    from wsfleet.bench.runner import run_scenario

    result: dict[str, Any] = await run_scenario(options, view)
    return result
