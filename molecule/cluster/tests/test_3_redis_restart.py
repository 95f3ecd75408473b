"""Redis restarted: every instance goes degraded, recovers by itself, and delivery
through the load balancer resumes."""

from __future__ import annotations

import asyncio
import json
import time

from conftest import LB_WS, REDIS, WS_INSTANCES
from wsfleet.client import Client


def health_codes(machine) -> dict[str, int]:
    codes = {}
    for name, (address, ports) in WS_INSTANCES.items():
        for port in ports:
            result = machine(name).run(
                f'/opt/wsfleet/current/bin/python -c "import urllib.request, urllib.error\n'
                f"try:\n    print(urllib.request.urlopen('http://{address}:{port}/health', timeout=3).status)\n"
                f'except urllib.error.HTTPError as e:\n    print(e.code)"'
            )
            codes[f"{name}:{port}"] = int(result.stdout.strip() or 0)
    return codes


def wait_for(machine, predicate, seconds: float) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    codes = health_codes(machine)
    while not predicate(codes) and time.monotonic() < deadline:
        time.sleep(0.5)
        codes = health_codes(machine)
    return codes


async def exchange_through_the_load_balancer() -> tuple[str, str]:
    async with Client(LB_WS, rooms=["after-redis-restart"]) as listener, Client(LB_WS) as publisher:
        await listener.wait_connected(timeout=30)
        await publisher.wait_connected(timeout=30)
        offset = await publisher.publish("after-redis-restart", {"back": True}, timeout=30)
        message = await listener.next_message(timeout=30)
        return offset, message.offset


def test_servers_recover_from_a_redis_restart(machine):
    name, _, port = REDIS
    redis_host = machine(name)
    unit = next(
        line.split()[0]
        for line in redis_host.check_output("systemctl list-units --plain --no-legend --type=service").splitlines()
        # The Redis instance itself, not its exporter (wsfleet-redis-exporter@...).
        if line.split()[0].endswith(f"@{port}.service")
        and ("redis" in line or "valkey" in line)
        and "exporter" not in line.split()[0]
    )
    assert all(code == 200 for code in health_codes(machine).values())
    redis_host.check_output(f"systemctl stop {unit}")
    try:
        degraded = wait_for(machine, lambda codes: all(code == 503 for code in codes.values()), 30)
        assert all(code == 503 for code in degraded.values()), json.dumps(degraded)
    finally:
        redis_host.check_output(f"systemctl start {unit}")
    recovered = wait_for(machine, lambda codes: all(code == 200 for code in codes.values()), 60)
    assert all(code == 200 for code in recovered.values()), json.dumps(recovered)
    acked, delivered = asyncio.run(exchange_through_the_load_balancer())
    assert acked == delivered
