"""The server's OCI image (make image): non-root, healthy against a real Redis,
and `docker stop` drains it: every client gets server-shutdown and close 1012,
and the container exits 0 within its grace period.

Builds the image with scripts/image.sh when it is missing or older than the
server's sources (a few minutes once; seconds after). The container shares the
host's network namespace so that everything stays on 127.0.0.1, with a real
redis-server (the host's, installed by scripts/setup.sh) on a free port.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/wsfleet/server:latest"
GRACE = 30  # docker stop -t: the image's documented stop timeout for this drain
DRAIN = {"WSFLEET_DRAIN_TIMEOUT": "5", "WSFLEET_DRAIN_SPREAD": "1"}
CLIENTS = 20


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def image_is_current() -> bool:
    created = docker("image", "inspect", "-f", "{{.Created}}", IMAGE, check=False)
    if not created:
        return False
    built = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    newest_source = max(p.stat().st_mtime for p in (ROOT / "server" / "src").rglob("*") if p.is_file())
    return built >= newest_source


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode:
        pytest.fail("no Docker engine: run make setup")
    if not image_is_current():
        subprocess.run([str(ROOT / "scripts" / "image.sh")], check=True, cwd=ROOT)
    return IMAGE


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def container(image: str, redis_port: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    environment = {
        "WSFLEET_HOST": "127.0.0.1",
        "WSFLEET_PORT": str(port),
        "WSFLEET_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        **DRAIN,
    }
    flags = [item for name, value in environment.items() for item in ("-e", f"{name}={value}")]
    name = docker("run", "-d", "--network", "host", "--read-only", *flags, image)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, docker("logs", name)
            time.sleep(0.2)
        yield name, port
    finally:
        docker("rm", "-f", name, check=False)


def test_the_image_runs_as_non_root(image: str) -> None:
    assert docker("image", "inspect", "-f", "{{.Config.User}}", image) == "10001:10001"
    assert docker("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u") == "10001"


def test_health_is_200_against_redis(container: tuple[str, int]) -> None:
    _, port = container
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
        assert answer.status == 200
        assert json.load(answer)


async def _client_until_closed(url: str, connected: asyncio.Event, ready: list[int]) -> tuple[list[str], int | None]:
    async with websockets.connect(url) as client:
        json.loads(await client.recv())  # welcome
        ready.append(1)
        if len(ready) == CLIENTS:
            connected.set()
        kinds = []
        try:
            while True:
                kinds.append(json.loads(await asyncio.wait_for(client.recv(), GRACE + 10))["type"])
        except websockets.ConnectionClosed:
            pass
        return kinds, client.close_code


def test_docker_stop_drains_clients_and_exits_0_within_grace(container: tuple[str, int]) -> None:
    name, port = container

    async def scenario() -> tuple[list[tuple[list[str], int | None]], float]:
        connected, ready = asyncio.Event(), []
        clients = [
            asyncio.create_task(_client_until_closed(f"ws://127.0.0.1:{port}/ws", connected, ready)) for _ in range(CLIENTS)
        ]
        await asyncio.wait_for(connected.wait(), 30)
        started = time.monotonic()
        stop = await asyncio.create_subprocess_exec("docker", "stop", "-t", str(GRACE), name, stdout=asyncio.subprocess.DEVNULL)
        results = await asyncio.gather(*clients)
        await stop.wait()
        return results, time.monotonic() - started

    results, elapsed = asyncio.run(scenario())
    for kinds, code in results:
        assert "server-shutdown" in kinds, kinds
        assert code == 1012
    assert docker("inspect", "-f", "{{.State.ExitCode}}", name) == "0", docker("logs", name)
    assert elapsed < GRACE, f"docker stop took {elapsed:.1f} s"
    print(f"docker stop: {len(results)} clients got server-shutdown and 1012, exit 0 after {elapsed:.1f} s")
