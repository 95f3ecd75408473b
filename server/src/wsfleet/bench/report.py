"""What a person sees: a live progress bar, a summary table, a latency plot."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from wsfleet.bench.stats import LatencyHistogram

__all__ = ["ProgressView", "plot_latency", "render_table", "summary_rows"]


class ProgressView:
    """A progress bar (rich, on a terminal) or a line every few seconds (otherwise).

    ``mode``: ``auto`` (rich on a terminal, lines elsewhere), ``bar``, ``lines``, ``off``.
    """

    def __init__(self, title: str, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.title = title
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        if mode == "bar":
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )
            except ImportError:
                mode = "lines"  # rich is in the `bench` extra
            else:
                self._rich = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(),
                    console=Console(file=self.stream),
                    transient=False,
                )
        self.mode = mode
        self._last_line = 0.0

    def __enter__(self) -> ProgressView:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._rich is not None:
            self._rich.stop()

    def __call__(self, phase: str, done: float, total: float, info: str) -> None:
        if self.mode == "off":
            return
        if self._rich is not None:
            name = f"{self.title} {phase}"
            task = self._tasks.get(phase)
            if task is None:
                for other in self._tasks.values():  # an earlier phase is over
                    self._rich.update(other, completed=self._rich.tasks[other].total)
                task = self._tasks[phase] = self._rich.add_task(name, total=total, info=info)
            self._rich.update(task, completed=done, total=total, info=info)
            return
        now = time.monotonic()
        if now - self._last_line >= 2.0:
            self._last_line = now
            shown = f"{done:.0f}/{total:.0f}" if total >= 10 else f"{done:.1f}/{total:.1f}"
            print(f"[bench] {self.title} {phase}: {shown} {info}", file=self.stream, flush=True)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = (
            f"{value:,.3f}"
            if abs(value) < 10
            else f"{value:,.1f}"
            if abs(value) < 1000
            else f"{value:,.0f}"
        )
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures of one result, as (name, value) pairs for a table."""
    rows: list[tuple[str, str]] = [("target", str(result.get("label")))]
    scenario = result["scenario"]
    if scenario == "churn":
        published = result["published"]
        rows += [
            (
                "members (churning)",
                f"{result['connections']['members']} ({result['connections']['churners']})",
            ),
            ("published / acked", f"{published['sent']:,} / {published['acked']:,}"),
            ("resumes", _fmt(result["resumes"])),
            ("not recovered", _fmt(result["not_recovered"])),
            ("delivered", _fmt(result["delivered"])),
            ("duplicated", _fmt(result["duplicated"])),
            ("gaps", _fmt(result["gaps"])),
            ("out of order", _fmt(result["out_of_order"])),
            ("lost", _fmt(result["lost"])),
        ]
        for key in ("p50", "p99", "max"):
            rows.append((f"resume {key}", _fmt(result["resume_latency"].get(f"{key}_ms"), "ms")))
            rows.append((f"latency {key}", _fmt(result["latency"].get(f"{key}_ms"), "ms")))
        return rows
    if scenario in ("connect", "idle"):
        connections = result["connections"]
        rows += [
            ("connections opened", f"{connections['opened']:,} of {connections['requested']:,}"),
            ("failed", _fmt(connections["failed"])),
        ]
        if connections["failures"]:
            rows.append(
                (
                    "failure reasons",
                    ", ".join(f"{k}: {v}" for k, v in connections["failures"].items()),
                )
            )
        rows += [
            ("closed by server", _fmt(connections["closed_by_server"])),
            ("ramp", _fmt(result["ramp_seconds"], "s")),
            ("connects per second", _fmt(result["connects_per_second"])),
        ]
        latency = result["handshake_latency"]
        for key in ("p50", "p90", "p99", "p99.9", "max"):
            rows.append((f"handshake {key}", _fmt(latency.get(f"{key}_ms"), "ms")))
        rows += [
            ("server processes", _fmt(len(result["servers"]))),
            ("server RSS before", _fmt(result["server_rss_before_mib"], "MiB")),
            ("server RSS after", _fmt(result["server_rss_after_mib"], "MiB")),
            ("server memory per connection", _fmt(result["memory_per_connection_bytes"], "B")),
            ("server CPU", _fmt(result.get("server_cpu_seconds"), "s")),
        ]
        if result.get("proxy_cpu_seconds") is not None:
            rows.append(("proxy CPU", _fmt(result["proxy_cpu_seconds"], "s")))
        if "held" in result:
            held = result["held"]
            rows += [
                ("held for", _fmt(held["hold_seconds"], "s")),
                ("open after hold", _fmt(held["alive"])),
                ("answered a ping", _fmt(held["answered"])),
            ]
    else:
        connections = result["connections"]
        published = result["published"]
        latency = result["latency"]
        rows += [
            ("members", f"{connections['members']:,} of {connections['members_wanted']:,}"),
            ("publishers", _fmt(connections["publishers"])),
            ("published", f"{published['sent']:,} ({published['per_second']:,.0f}/s)"),
            ("acked", _fmt(published["acked"])),
            ("publish errors", _fmt(sum(published["errors"].values()))),
            ("delivered", _fmt(result["delivered"])),
            ("delivered per second", _fmt(result["delivered_per_second"])),
            ("lost", _fmt(result["lost"])),
            ("duplicated", _fmt(result["duplicated"])),
            ("closed by server", _fmt(connections["closed_by_server"])),
        ]
        for key in ("p50", "p90", "p99", "p99.9", "max"):
            rows.append((f"latency {key}", _fmt(latency.get(f"{key}_ms"), "ms")))
        for key in ("p50", "p99"):
            ack = result["ack_latency"].get(f"{key}_ms")
            rows.append((f"publish to ack {key}", _fmt(ack, "ms")))
        rows += [
            ("server CPU", _fmt(result["server_cpu_cores"], "cores")),
            ("deliveries per server CPU second", _fmt(result["deliveries_per_server_cpu_second"])),
            ("proxy CPU", _fmt(result.get("proxy_cpu_cores"), "cores")),
            ("Redis CPU", _fmt(result["redis_cpu_cores"], "cores")),
            (
                "Redis CPU per 1,000 deliveries",
                _fmt(result["redis_cpu_ms_per_1000_deliveries"], "ms"),
            ),
        ]
        for node in result["redis_nodes"] if len(result["redis_nodes"]) > 1 else []:
            rows.append(
                (
                    f"Redis {node['name']}",
                    f"{_fmt(node['cpu_seconds'], 's CPU')}, {_fmt(node['commands'])} commands",
                )
            )
    rows.append(("client processes", _fmt(result["workers"])))
    return rows


def render_table(result: dict[str, Any], stream: TextIO | None = None) -> None:
    """Print the summary table (rich on a terminal, aligned text otherwise)."""
    stream = stream or sys.stdout
    rows = summary_rows(result)
    title = f"wsfleet bench {result['scenario']}"
    if stream.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            table.add_column("figure")
            table.add_column("value", justify="right")
            for name, value in rows:
                table.add_row(name, value)
            Console(file=stream).print(table)
            return
    width = max(len(name) for name, _ in rows)
    print(title, file=stream)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}", file=stream)


def plot_latency(
    series: Sequence[tuple[str, LatencyHistogram]], path: Path, title: str = "latency"
) -> None:
    """A PNG of latency distributions (one line per series), log-scaled time axis."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("the plot needs matplotlib: pip install 'wsfleet[bench]'") from error
    figure, (density, cumulative) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, histogram in series:
        buckets = list(histogram.buckets())
        if not buckets:
            continue
        xs = [max(low, 1e-7) * 1000 for low, _, _ in buckets] + [buckets[-1][1] * 1000]
        counts = [count for _, _, count in buckets]
        share = [100.0 * count / histogram.values for count in counts]
        density.stairs(share, xs, label=label)
        running, edges, tail = 0, [], []
        for _, high, count in buckets:
            running += count
            if running < histogram.values:  # the slowest bucket leaves nothing slower
                edges.append(high * 1000)
                tail.append(1.0 - running / histogram.values)
        cumulative.step(edges, tail, where="post", label=label)
    density.set_xscale("log")
    density.set_xlabel("latency (ms)")
    density.set_ylabel("% of messages per bucket")
    density.set_title(f"{title}: distribution")
    cumulative.set_xscale("log")
    cumulative.set_yscale("log")
    cumulative.set_xlabel("latency (ms)")
    cumulative.set_ylabel("fraction slower")
    cumulative.set_title(f"{title}: tail (0.01 = p99)")
    for axis in (density, cumulative):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
