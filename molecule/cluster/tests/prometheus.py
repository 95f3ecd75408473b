"""The cluster scenario's Prometheus: its API, readiness waits and a little real traffic."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import websockets

PROMETHEUS = "http://127.0.0.1:19090"
LB = "ws://172.30.233.10/ws"
WS_HOST = ("cluster-ws1", "172.30.233.21", [8000, 8001])
# Every scrape target the inventory implies: 4 instances (2 per server host),
# node_exporter on the 5 hosts of the fleet, 1 nginx exporter, 1 redis_exporter,
# Prometheus itself.
EXPECTED_TARGETS = {"wsfleet": 4, "node": 5, "nginx": 1, "redis": 1, "prometheus": 1}


def api(path: str, **params: str) -> Any:
    """GET one Prometheus API endpoint; the "data" of a success answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{PROMETHEUS}/api/v1/{path}{query}", timeout=10) as answer:
        document = json.load(answer)
    assert document["status"] == "success", document
    return document["data"]


def query(expr: str) -> list[dict[str, Any]]:
    """Instant query; the series it returns."""
    return api("query", query=expr)["result"]


def has_data(series: list[dict[str, Any]]) -> bool:
    """At least one series with a number (NaN, e.g. a quantile of nothing, is no data)."""
    return any(not math.isnan(float(s["value"][1])) for s in series)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, pause: float = 0.5) -> Any:
    """Poll until condition() is truthy; its value. Fails naming what it waited for."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, AssertionError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(pause)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


async def _traffic(messages: int) -> int:
    """Clients in one room on both instances (directly and through the LB); one publishes."""
    _, address, ports = WS_HOST
    urls = [f"ws://{address}:{port}/ws" for port in ports] + [LB]
    clients = [await websockets.connect(url) for url in urls]
    try:
        for client in clients:
            json.loads(await client.recv())  # welcome
            await client.send(json.dumps({"type": "join", "room": "monitoring"}))
            while json.loads(await client.recv())["type"] != "joined":
                pass
        for number in range(messages):
            await clients[0].send(json.dumps({"type": "message", "room": "monitoring", "content": number}))
        received = 0
        for client in clients[1:]:
            seen = 0
            while seen < messages:
                frame = json.loads(await asyncio.wait_for(client.recv(), 10))
                seen += frame["type"] == "message"
            received += seen
        return received
    finally:
        for client in clients:
            await client.close()


@pytest.fixture(scope="session")
def traffic() -> int:
    """Real fanout across the two instances, so latency and message series have data."""
    return asyncio.run(_traffic(50))


@pytest.fixture(scope="session")
def scraped(traffic: int) -> None:
    """Every target up, and the traffic visible in Prometheus (readiness, no fixed sleep)."""

    def all_up() -> bool:
        targets = api("targets", state="active")["activeTargets"]
        counts: dict[str, int] = {}
        for target in targets:
            if target["health"] == "up":
                counts[target["labels"]["job"]] = counts.get(target["labels"]["job"], 0) + 1
        return counts == EXPECTED_TARGETS

    wait_for(all_up, 90, "every target up")
    wait_for(lambda: has_data(query("wsfleet:fanout_latency_seconds:p99")), 60, "fanout latency from the traffic")
