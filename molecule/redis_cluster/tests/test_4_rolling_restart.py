"""playbooks/redis-rolling-restart.yml under the stream: every Redis node is
restarted (a new PID), one at a time, primaries after a failover to their
replica, and no listener loses or repeats an acknowledged message."""

from __future__ import annotations

import asyncio
import sys

from ansible_run import failures, run_under_stream
from conftest import REDIS_PORTS
from redis_nodes import wait_until_healthy
from traffic import Stream, assert_exact, rooms_on_every_shard

REDIS = ["rc-redis1", "rc-redis2", "rc-redis3"]


def main_pids(machine) -> dict[str, str]:
    return {
        f"{host}:{port}": machine(host).check_output(f"systemctl show -p MainPID --value wsfleet-redis@{port}.service")
        for host in REDIS
        for port in REDIS_PORTS
    }


def test_rolling_restart_of_every_redis_node_loses_nothing(machine):
    wait_until_healthy(machine, 3)
    before = main_pids(machine)
    stream = Stream(rooms_on_every_shard(machine, "rolling"))
    result, seconds, figures = asyncio.run(run_under_stream(stream, "redis-rolling-restart.yml", settle=2))
    assert result.returncode == 0, failures(result)
    after = main_pids(machine)
    print(f"\nredis-rolling-restart.yml: {seconds:.0f} s; stream: {figures}", file=sys.stderr)
    assert all(before[node] != after[node] != "0" for node in before), (before, after)
    assert_exact(figures)
    wait_until_healthy(machine, 3)
