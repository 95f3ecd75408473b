"""``wsfleet bench`` at smoke size against real redis-server and server processes.

These check that every scenario runs and loses nothing, not how fast anything is
(speed is ``make bench``'s business).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Launcher, RedisProcess, ServerProcess
from wsfleet.bench.backbone import inline_command
from wsfleet.bench.cli import expand_urls, parse_sources
from wsfleet.bench.procstat import Sample
from wsfleet.bench.runner import (
    BenchError,
    BenchOptions,
    cpu_used,
    drain_complete,
    fanout_plan,
    plan_sources,
    resolve_pids,
    run_scenario,
)
from wsfleet.bench.stats import LatencyHistogram, summarize
from wsfleet.bench.wire import SOCKETIO, WSFLEET, WireConnection
from wsfleet.session import sender_json

SERVER_FLAGS = ("--log-level", "warning", "--rate-limit", "100000", "--rate-burst", "100000")


@pytest.fixture(scope="module")
def servers(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    launcher = Launcher(redis_server, tmp_path_factory.mktemp("bench"))
    yield launcher.start_many(2, *SERVER_FLAGS)
    launcher.stop_all()


def urls(servers: list[ServerProcess]) -> list[str]:
    return [server.url for server in servers]


async def test_connect_opens_every_connection_over_two_processes_and_two_sources(
    servers: list[ServerProcess], redis_server: RedisProcess
) -> None:
    options = BenchOptions(
        scenario="connect",
        urls=urls(servers),
        connections=300,
        processes=2,
        redis_url=redis_server.url,
        settle=0.2,
    )
    result = await run_scenario(options)
    assert result["workers"] == 2
    assert result["sources"] == ["127.0.0.2", "127.0.0.3"]
    assert result["connections"]["opened"] == 300
    assert result["connections"]["failed"] == 0
    assert result["handshake_latency"]["count"] == 300
    assert result["connects_per_second"] > 0
    # Both servers were found by their ports and measured.
    assert sorted(row["pid"] for row in result["servers"]) == sorted(s.pid for s in servers)
    assert result["memory_per_connection_bytes"] is not None


async def test_idle_holds_connections_and_every_one_answers_a_ping(
    servers: list[ServerProcess],
) -> None:
    options = BenchOptions(
        scenario="idle",
        urls=urls(servers),
        connections=200,
        hold=0.5,
        check=True,
        settle=0.2,
    )
    result = await run_scenario(options)
    assert result["connections"]["opened"] == 200
    assert result["held"] == {"hold_seconds": 0.5, "alive": 200, "answered": 200}
    assert result["connections"]["closed_by_server"] == 0


async def test_fanout_delivers_every_message_once_across_instances(
    servers: list[ServerProcess], redis_server: RedisProcess
) -> None:
    # 160 members per instance join at once: more than the Redis pool's 100
    # connections, which must queue rather than answer `unavailable`.
    options = BenchOptions(
        scenario="fanout",
        urls=urls(servers),
        rooms=40,
        clients_per_room=8,
        publishers=3,
        rate=150,
        duration=1.5,
        processes=2,
        redis_url=redis_server.url,
    )
    result = await run_scenario(options)
    assert result["connections"]["members"] == 320
    assert result["connections"]["failures"] == {}
    assert result["published"]["sent"] > 100
    assert result["published"]["acked"] == result["published"]["sent"]
    assert result["published"]["errors"] == {}
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    assert result["expected"] == result["delivered"] == result["published"]["acked"] * 8
    assert result["latency"]["count"] == result["delivered"]
    assert 0 < result["latency"]["p50_ms"] <= result["latency"]["p99_ms"]
    assert result["redis_cpu_seconds"] is not None
    assert len(result["servers"]) == 2


async def test_unseen_servers_have_no_cpu_figure_and_a_proxy_is_measured(
    servers: list[ServerProcess],
) -> None:
    # The servers behind a load balancer in containers: their PIDs are not seen
    # (here: a PID that is gone), so no server CPU at all rather than 0. The
    # process on the path (here: the servers themselves standing in for nginx)
    # is measured over the same window.
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    options = BenchOptions(
        scenario="fanout",
        urls=urls(servers),
        rooms=4,
        clients_per_room=5,
        publishers=2,
        rate=200,
        duration=1.0,
        server_pids=[gone.pid],
        proxy_pids=[server.pid for server in servers],
    )
    result = await run_scenario(options)
    assert result["lost"] == 0 and result["delivered"] > 0
    assert result["server_cpu_seconds"] is None
    assert result["server_cpu_cores"] is None
    assert result["deliveries_per_server_cpu_second"] is None
    assert result["proxy_cpu_seconds"] is not None and result["proxy_cpu_seconds"] > 0
    assert result["proxy_cpu_cores"] is not None

    connect = await run_scenario(
        BenchOptions(
            scenario="connect",
            urls=urls(servers),
            connections=50,
            settle=0.1,
            server_pids=[gone.pid],
            proxy_pids=[servers[0].pid],
        )
    )
    assert connect["servers"] == [] and connect["server_cpu_seconds"] is None
    assert connect["proxy_cpu_seconds"] is not None


def test_cli_writes_json_and_a_plot(servers: list[ServerProcess], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out, plot = tmp_path / "fanout.json", tmp_path / "fanout.png"
    ports = sorted(server.port for server in servers)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsfleet",
            "bench",
            "fanout",
            *[f"--url={url}" for url in urls(servers)],
            "--rooms=2",
            "--clients-per-room=2",
            "--publishers=1",
            "--rate=50",
            "--duration=1",
            "--progress=lines",
            f"--json={out}",
            f"--plot={plot}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "delivered per second" in completed.stdout
    result = json.loads(out.read_text())
    assert result["lost"] == 0 and result["duplicated"] == 0
    assert sorted(result["options"]["urls"]) == [f"ws://127.0.0.1:{p}/ws" for p in ports]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Units


def test_histogram_percentiles_and_merge_are_within_a_bucket() -> None:
    first, second = LatencyHistogram(), LatencyHistogram()
    for micros in range(1, 1001):
        (first if micros % 2 else second).record(micros / 1e6)
    first.merge(LatencyHistogram.from_json(json.loads(json.dumps(second.to_json()))))
    assert first.values == 1000
    for fraction, exact in ((0.5, 500e-6), (0.99, 990e-6), (0.999, 999e-6)):
        value = first.percentile(fraction)
        assert value is not None and abs(value - exact) / exact < 0.05
    summary = summarize(first)
    assert summary["count"] == 1000 and summary["max_ms"] == 1.0
    assert LatencyHistogram().percentile(0.5) is None


def test_port_ranges_and_source_addresses_expand() -> None:
    assert expand_urls(["ws://127.0.0.1:8801-8803/ws,ws://h:9/ws"]) == [
        "ws://127.0.0.1:8801/ws",
        "ws://127.0.0.1:8802/ws",
        "ws://127.0.0.1:8803/ws",
        "ws://h:9/ws",
    ]
    assert parse_sources("3") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert parse_sources("127.0.0.5-127.0.0.6") == ["127.0.0.5", "127.0.0.6"]
    assert parse_sources("127.0.0.9,127.0.0.7") == ["127.0.0.9", "127.0.0.7"]


def test_sources_are_automatic_on_loopback_only_and_loopback_ones_never_go_out() -> None:
    local = BenchOptions(scenario="connect", urls=["ws://127.0.0.1:8080/ws"])
    assert plan_sources(local, 2) == ["127.0.0.2", "127.0.0.3"]
    # A load balancer's address: the kernel chooses the source on the route to it.
    remote = BenchOptions(scenario="connect", urls=["ws://172.30.231.10:80/ws"])
    assert plan_sources(remote, 2) == []
    remote.sources = ["172.30.231.1"]
    assert plan_sources(remote, 2) == ["172.30.231.1"]
    remote.sources = ["127.0.0.2", "127.0.0.3"]
    with pytest.raises(BenchError, match=r"cannot reach 172\.30\.231\.10"):
        plan_sources(remote, 2)


def test_a_port_docker_publishes_is_not_taken_for_the_server(tmp_path: Path) -> None:
    # A process named docker-proxy (what holds a port Docker publishes) listens on
    # a loopback port: the target there is a container's, and docker-proxy's CPU
    # and memory are not the server's.
    proxy = tmp_path / "docker-proxy"
    proxy.symlink_to(sys.executable)
    listener = subprocess.Popen(
        [
            str(proxy),
            "-c",
            "import socket, sys\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        options = BenchOptions(scenario="connect", urls=[f"ws://127.0.0.1:{port}/ws"])
        assert resolve_pids(options) == ([], [])
        options.server_pids = [listener.pid]  # given by hand: measured as told
        assert resolve_pids(options)[0] == [listener.pid]
    finally:
        listener.kill()
        listener.wait()


def test_the_drain_waits_for_quiet_when_some_publishes_have_no_ack() -> None:
    # 10 acked messages x 5 members expected; all in and nothing unsettled: done.
    assert drain_complete(50, 50, 0)
    assert not drain_complete(49, 50, 0)
    # One publish without an ack was delivered to 5 members: unique reaches 50
    # while 5 deliveries of acked messages are still on their way. Not done: a
    # stop here would count those as lost.
    assert not drain_complete(50, 50, 1)
    assert not drain_complete(55, 50, 1)


def test_cpu_used_is_none_when_no_process_was_read() -> None:
    assert cpu_used([None], [None]) is None
    assert cpu_used([], []) is None
    first, last = Sample(1, 0, 1.0), Sample(1, 0, 1.5)
    assert cpu_used([first, None], [last, Sample(2, 0, 9.0)]) == 0.5


def test_fanout_plan_spreads_each_room_over_the_instances() -> None:
    options = BenchOptions(scenario="fanout", urls=["a", "b"], rooms=5, clients_per_room=4)
    options.publishers = 2
    members, publishers = fanout_plan(options, 3, "x")
    flat = [member for share in members for member in share]
    assert len(flat) == 20 and {len(share) for share in members} <= {6, 7}
    for room in {room for _, room in flat}:
        assert {index % 2 for index, r in flat if r == room} == {0, 1}  # both targets
    owned = [room for share in publishers for spec in share for room in spec["rooms"]]
    assert sorted(owned) == sorted({room for _, room in flat})


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> Any:
        return None

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def _frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes((first, len(payload))) + payload
    if len(payload) < 65536:
        return bytes((first, 126)) + len(payload).to_bytes(2, "big") + payload
    return bytes((first, 127)) + len(payload).to_bytes(8, "big") + payload


async def test_wire_parses_split_fragmented_and_long_frames() -> None:
    events: list[tuple[str, Any]] = []
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    connection = WireConnection(WSFLEET, b"GET / HTTP/1.1\r\n\r\n", ready)
    connection.handler = lambda conn, kind, data: events.append((kind, data))
    transport = _Transport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    long_text = json.dumps({"type": "message", "content": "x" * 70000}).encode()
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        + _frame(b'{"type":"welcome"}')
        + _frame(b'{"type":"pong","id":"a', fin=False)
        + _frame(b'b"}', opcode=0)
        + _frame(b"hi", opcode=9)
        + _frame(b'{"type":"ack","pad":"' + b"y" * 300 + b'"}')
        + _frame(long_text)
    )
    for start in range(0, len(stream), 7):  # arbitrary TCP segmentation
        connection.data_received(stream[start : start + 7])
    assert [kind for kind, _ in events] == ["welcome", "pong", "ack", "message"]
    assert events[1][1]["id"] == "ab"
    assert len(events[3][1]["content"]) == 70000
    assert b"\x8a\x82\x00\x00\x00\x00hi" in transport.written  # the ping was answered
    connection.data_received(_frame(b"\x03\xe8", opcode=8))
    assert events[-1] == ("_close", 1000)


def test_socketio_dialect_answers_engine_io_and_decodes_events() -> None:
    events: list[tuple[str, Any]] = []
    sent: list[bytes] = []

    class Fake:
        def handler(self, conn: Any, kind: str, data: Any) -> None:
            events.append((kind, data))

        def send_text(self, payload: bytes) -> None:
            sent.append(payload)

        def abort(self) -> None:
            sent.append(b"<abort>")

    fake: Any = Fake()
    SOCKETIO.on_text(fake, b'0{"sid":"s","pingInterval":20000}')
    SOCKETIO.on_text(fake, b'40{"sid":"t"}')
    SOCKETIO.on_text(fake, b"2")
    SOCKETIO.on_text(fake, b'42["message",{"room":"r","content":{"t":1}}]')
    assert sent == [b"40", b"3"]
    assert events == [("message", {"room": "r", "content": {"t": 1}})]
    assert SOCKETIO.join("r") == b'42["join","r"]'
    assert json.loads(SOCKETIO.publish("r", b"[1]", "p.0")[2:]) == [
        "message",
        {"room": "r", "id": "p.0", "content": [1]},
    ]


def test_sender_json_is_small_for_the_life_of_a_connection() -> None:
    # orjson's results occupy 4 KiB each whatever their length; the `from` field is
    # kept per connection, so it must be allocated at its own size.
    assert sender_json("abc") == b'"abc"'
    assert sender_json('é"\n') == '"é\\"\\n"'.encode()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [sender_json(f"connection-{index:06d}") for index in range(1000)]
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 1000
    assert grown < 1000 * 200, f"{grown / 1000:.0f} bytes per sender_json"


async def test_churn_members_leave_and_resume_with_no_duplicate_gap_or_loss(
    servers: list[ServerProcess],
) -> None:
    options = BenchOptions(
        scenario="churn",
        urls=urls(servers),
        rooms=4,
        clients_per_room=6,
        churners=3,
        publishers=2,
        rate=200,
        duration=2.0,
    )
    result = await run_scenario(options)
    assert result["connections"]["members"] == 24
    assert result["connections"]["churners"] == 12
    assert result["connections"]["failures"] == {}
    assert result["published"]["errors"] == {}
    assert result["published"]["acked"] == result["published"]["sent"] > 200
    assert result["resumes"] > 50
    assert result["not_recovered"] == 0
    assert (result["duplicated"], result["gaps"], result["out_of_order"], result["lost"]) == (
        0,
        0,
        0,
        0,
    )
    assert result["resume_latency"]["count"] == result["resumes"]
    assert result["latency"]["count"] == result["delivered"]


def test_suite_runs_fanout_on_its_own_cluster_with_replicas_and_stops_it(tmp_path: Path) -> None:
    # The suite starts 3 primaries and 3 replicas on 7510-7515 (clear of the server
    # tests' 7300-7305 and of `make bench`'s 7500-7505), servers with
    # --publish-replicas 1, and measures every node; nothing it started outlives it.
    ports = range(7510, 7516)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsfleet",
            "bench",
            "suite",
            "--targets=wsfleet-cluster-r1",
            "--scenarios=fanout",
            "--rounds=1",
            "--fanout-rooms=40",
            "--fanout-clients=3",
            "--fanout-publishers=4",
            "--fanout-rate=200",
            "--fanout-duration=1.5",
            "--cluster-base-port=7510",
            "--progress=off",
            f"--out={tmp_path}",
            f"--report={tmp_path / 'report.md'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert [inline_command(port, "PING") for port in ports] == [None] * 6
    (run,) = json.loads(next(tmp_path.glob("bench-*.json")).read_text())["runs"]
    assert run["target"] == "wsfleet-cluster-r1"
    assert run["connections"]["members"] == 120
    assert run["published"]["errors"] == {}
    assert run["published"]["acked"] == run["published"]["sent"] > 200
    assert (run["lost"], run["duplicated"]) == (0, 0)
    assert run["ack_latency"]["count"] == run["published"]["acked"]
    roles = sorted(node["role"] for node in run["redis_nodes"])
    assert roles == ["primary"] * 3 + ["replica"] * 3
    # 40 rooms hash to every shard: each primary ran its share of the publishes.
    for node in run["redis_nodes"]:
        assert node["cpu_seconds"] is not None
        if node["role"] == "primary":
            assert node["commands"] > 20, run["redis_nodes"]
    assert run["primaries_commands_spread"] is not None
    assert sum(share["rooms"] for share in run["primaries"]) == 40
    assert sum(share["publishes"] for share in run["primaries"]) == run["published"]["acked"]
    assert all(share["rooms"] > 0 for share in run["primaries"]), run["primaries"]
    report = (tmp_path / "report.md").read_text()
    assert "| Redis CPU per 1,000 deliveries (ms) |" in report
    assert "primary 3: share of the primaries' CPU (%)" in report
