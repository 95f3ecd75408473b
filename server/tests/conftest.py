"""Fixtures: a real redis-server and real wsfleet server processes on loopback ports.

Nothing is mocked. Readiness is always a poll with a deadline (a port that answers,
``/health`` that says 200), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from wsfleet.bench.backbone import LoopbackCluster

DEADLINE = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(condition: Any, what: str, timeout: float = DEADLINE, every: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


async def wait_until_async(
    condition: Any, what: str, timeout: float = DEADLINE, every: float = 0.02
) -> Any:
    """Like :func:`wait_until`, but lets other tasks of the test run meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


class RedisProcess:
    """A throw-away redis-server without persistence (a restart loses everything)."""

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.directory = directory
        self.extra_args = tuple(extra_args)  # e.g. ("--replicaof", host, port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def server_args(self) -> tuple[str, ...]:
        """How a wsfleet server finds this Redis."""
        return ("--redis-url", self.url)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.command("PING") == "+PONG", "redis-server to answer")

    def command(self, *args: str) -> str | None:
        """Send one inline command; return the first reply line, or None if down."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall((" ".join(args) + "\r\n").encode())
                return sock.recv(4096).split(b"\r\n")[0].decode()
        except OSError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


class RedisClusterNodes(LoopbackCluster):
    """The tests' Redis Cluster on loopback: 3 primaries and 3 replicas.

    Ports 7300-7305 (cluster bus 17300-17305); how it starts, settles and stops is
    ``wsfleet.bench.backbone.LoopbackCluster``, shared with ``wsfleet bench suite``.
    """

    PORTS = tuple(range(7300, 7306))

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, self.PORTS, replicas=1, node_timeout_ms=1000)

    def owner(self, slot: int) -> dict[str, Any]:
        for node in self.primaries():
            if any(low <= slot <= high for low, high in node["slots"]):
                return node
        raise AssertionError(f"no primary owns slot {slot}")

    def owner_or_none(self, slot: int) -> int | None:
        """The port of the live primary that owns ``slot``, None while nobody does."""
        try:
            return int(self.owner(slot)["port"])
        except AssertionError:
            return None

    def keyslot(self, key: str) -> int:
        with self.client(self.PORTS[0]) as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))


class ServerProcess:
    """One ``python -m wsfleet serve`` process."""

    def __init__(
        self,
        redis: RedisProcess | RedisClusterNodes,
        log_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.redis = redis
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wsfleet",
                    "serve",
                    "--port",
                    str(self.port),
                    *self.redis.server_args(),
                    "--instance-id",
                    f"test-{self.port}",
                    *self.args,
                ],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = DEADLINE) -> None:
        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
            return self.http("GET", "/health")[0] == 200

        wait_until(healthy, f"/health 200 on port {self.port}", timeout)

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()
        except OSError:
            return 0, {}, b""

    def json(self, path: str) -> tuple[int, Any]:
        status, _, body = self.http("GET", path)
        return status, json.loads(body) if body else None

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample in /metrics (0 when absent)."""
        _, _, body = self.http("GET", "/metrics")
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in body.decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server for this test alone (one it may pause, stop or restart)."""
    (tmp_path / "redis").mkdir()
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Launcher:
    """Starts servers for one test or module and stops them all at the end."""

    def __init__(self, redis: RedisProcess, log_dir: Path) -> None:
        self.redis = redis
        self.log_dir = log_dir
        self.servers: list[ServerProcess] = []

    def __call__(
        self,
        *args: str,
        redis: RedisProcess | RedisClusterNodes | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> ServerProcess:
        server = ServerProcess(redis or self.redis, self.log_dir, *args, env=env)
        self.servers.append(server)
        return server.start(wait=wait)

    def start_many(self, count: int, *args: str) -> list[ServerProcess]:
        """Start ``count`` servers in parallel (imports dominate start-up time)."""
        servers = [ServerProcess(self.redis, self.log_dir, *args) for _ in range(count)]
        self.servers.extend(servers)
        for server in servers:
            server.start(wait=False)
        for server in servers:
            server.wait_healthy()
        return servers

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def launch(redis_server: RedisProcess, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(redis_server, tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def cluster(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Three instances on one Redis, with an API key; shared by a module's tests."""
    launcher = Launcher(redis_server, tmp_path_factory.mktemp("cluster"))
    servers = launcher.start_many(
        3,
        "--api-key",
        "test-api-key",
        "--history-size",
        "50",
        "--rate-limit",
        "2000",
        "--rate-burst",
        "2000",
    )
    yield servers
    launcher.stop_all()


_room_counter = 0


def unique_room(prefix: str = "room") -> str:
    global _room_counter
    _room_counter += 1
    return f"{prefix}-{os.getpid()}-{_room_counter}-{time.monotonic_ns() % 1_000_000}"


async def connect(url: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """Open a raw WebSocket connection and read its ``welcome``."""
    connection = await websockets.connect(url, compression=None, **kwargs)
    welcome = await recv_json(connection)
    assert welcome["type"] == "welcome", welcome
    return connection, welcome


async def send_json(connection: ClientConnection, frame: dict[str, Any]) -> None:
    await connection.send(json.dumps(frame))


async def recv_json(connection: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await connection.recv())
        return frame


async def recv_type(
    connection: ClientConnection, kind: str, timeout: float = 5.0
) -> dict[str, Any]:
    """Skip frames until one of ``kind`` arrives."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv_json(connection, timeout)
            if frame["type"] == kind:
                return frame


async def join(connection: ClientConnection, room: str, **extra: Any) -> dict[str, Any]:
    await send_json(connection, {"type": "join", "room": room, **extra})
    return await recv_type(connection, "joined")


async def publish(
    connection: ClientConnection, room: str, content: Any, request_id: str
) -> dict[str, Any]:
    """Publish and return the ack (or error) with that id, skipping other frames."""
    await send_json(
        connection, {"type": "message", "room": room, "content": content, "id": request_id}
    )
    async with asyncio.timeout(5):
        while True:
            frame = await recv_json(connection)
            if frame["type"] in ("ack", "error") and frame.get("id") == request_id:
                return frame
