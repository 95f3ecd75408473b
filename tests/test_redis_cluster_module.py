"""The redis_pubsub role's cluster module (library/wsfleet_redis_cluster.py) on
real redis-server processes on loopback: it creates a cluster from nothing,
changes nothing on a second run, grows it by a shard (re-pointing the replica the
new layout moves), finishes a rebalance that stopped halfway, and fails a
primary over before a restart. molecule/redis_cluster proves the same on hosts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = Path(sys.executable).parent / "ansible"
CLI = shutil.which("redis-cli")
SERVER = shutil.which("redis-server")
ADMIN = ("admin", "admin-test-password-0001")
PORTS = list(range(7610, 7618))  # cluster bus on port + 10000

pytestmark = pytest.mark.skipif(not (CLI and SERVER), reason="needs redis-server and redis-cli")


def node(port: int) -> str:
    return f"127.0.0.1:{port}"


def redis(port: int, *args: str) -> str:
    completed = subprocess.run(
        [CLI, "-p", str(port), "--user", ADMIN[0], "--no-auth-warning", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "REDISCLI_AUTH": ADMIN[1]},
    )
    return completed.stdout.strip()


def module(check: bool = False, **arguments) -> dict:
    """Run the module as Ansible does (ad hoc, on localhost) and return its result."""
    arguments = {"cli": CLI, "user": ADMIN[0], "password": ADMIN[1], "timeout": 60, **arguments}
    completed = subprocess.run(
        [
            str(ANSIBLE),
            "localhost",
            "-c",
            "local",
            "-o",
            "-M",
            str(ROOT / "roles/redis_pubsub/library"),
            "-m",
            "wsfleet_redis_cluster",
            "-a",
            json.dumps(arguments),
            *(["--check"] if check else []),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    line = completed.stdout.strip().splitlines()[-1]
    assert " => " in line, completed.stdout + completed.stderr
    return json.loads(line.split(" => ", 1)[1])


def slots_of(port: int) -> int:
    """Slots this node serves, from its own view."""
    me = next(line for line in redis(port, "CLUSTER", "NODES").splitlines() if "myself" in line)
    served = 0
    for item in me.split()[8:]:
        if not item.startswith("["):
            first, _, last = item.partition("-")
            served += int(last or first) - int(first) + 1
    return served


def primary_of(port: int) -> str:
    """host:port of this node's primary, or "-" for a primary."""
    lines = redis(port, "CLUSTER", "NODES").splitlines()
    me = next(line.split() for line in lines if "myself" in line)
    if me[3] == "-":
        return "-"
    return next(line.split()[1].split("@")[0] for line in lines if line.startswith(me[3]))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("redis-cluster-module")
    processes = []
    for port in PORTS:
        folder = base / str(port)
        folder.mkdir()
        config = folder / "redis.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\ncluster-enabled yes\ncluster-config-file nodes.conf\n"
            "cluster-node-timeout 2000\ncluster-require-full-coverage no\ncluster-allow-replica-migration no\n"
            'repl-diskless-sync yes\nrepl-diskless-sync-delay 0\nsave ""\nappendonly no\n'
            "masteruser replication\nmasterauth replication-test-password\n"
            "user default off resetpass -@all\n"
            f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n"
            "user replication on >replication-test-password -@all +psync +replconf +ping\n"
        )
        processes.append(subprocess.Popen([SERVER, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    for port in PORTS:
        while True:
            try:
                if redis(port, "PING") == "PONG":
                    break
            except subprocess.CalledProcessError:
                pass
            assert time.monotonic() < deadline, f"redis-server on {port} did not start"
            time.sleep(0.1)
    yield
    for process in processes:
        process.kill()
        process.wait()


# Three hosts of two instances (7610-7612 primaries on "hosts" 0-2, 7613-7615
# their second instances), as filter wsfleet_redis_cluster_shards lays them out;
# then a fourth host (7616, 7617).
THREE = [[node(7610), node(7614)], [node(7611), node(7615)], [node(7612), node(7613)]]
FOUR = [[node(7610), node(7614)], [node(7611), node(7615)], [node(7612), node(7617)], [node(7616), node(7613)]]


def test_creates_the_cluster_then_changes_nothing(nodes):
    first = module(action="layout", shards=THREE)
    assert first["changed"] is True, first
    assert sorted(slots_of(port) for port in (7610, 7611, 7612)) == [5461, 5461, 5462]
    assert [primary_of(port) for port in (7614, 7615, 7613)] == [node(7610), node(7611), node(7612)]
    second = module(action="layout", shards=THREE)
    assert second["changed"] is False, second


def test_check_mode_reports_the_growth_without_making_it(nodes):
    result = module(check=True, action="layout", shards=FOUR)
    assert result["changed"] is True and result["actions"], result
    assert "myself" in redis(7616, "CLUSTER", "NODES") and len(redis(7616, "CLUSTER", "NODES").splitlines()) == 1


def test_grows_by_a_shard_with_a_fair_share_of_slots(nodes):
    for key in range(200):
        redis(7610, "-c", "SET", f"wsfleet:key{key}", str(key))
    result = module(action="layout", shards=FOUR)
    assert result["changed"] is True, result
    assert all(abs(slots_of(port) - 4096) <= 1 for port in (7610, 7611, 7612, 7616))
    assert primary_of(7613) == node(7616)  # the replica that wrapped round follows the new primary
    assert primary_of(7617) == node(7612)
    assert [redis(7610, "-c", "GET", f"wsfleet:key{key}") for key in range(200)] == [str(key) for key in range(200)]
    assert module(action="layout", shards=FOUR)["changed"] is False


def test_finishes_a_rebalance_that_stopped_halfway(nodes):
    # Most of the new primary's slots moved away again, as if a rebalance had
    # stopped early: the next run must give it its share, not call it done.
    target = redis(7610, "CLUSTER", "MYID")
    source = redis(7616, "CLUSTER", "MYID")
    subprocess.run(
        [
            CLI,
            "--user",
            ADMIN[0],
            "--no-auth-warning",
            "--cluster",
            "reshard",
            node(7610),
            "--cluster-from",
            source,
            "--cluster-to",
            target,
            "--cluster-slots",
            "3700",
            "--cluster-yes",
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "REDISCLI_AUTH": ADMIN[1]},
    )
    assert slots_of(7616) < 500
    result = module(action="layout", shards=FOUR)
    assert result["changed"] is True, result
    assert slots_of(7616) >= 4096 * 0.9, result


def test_demote_fails_a_primary_over_before_a_restart(nodes):
    result = module(action="demote", node=node(7611))
    assert result["changed"] is True, result
    assert primary_of(7611) == node(7615)
    assert module(action="demote", node=node(7611))["changed"] is False
    assert module(action="wait_ready", node=node(7611))["changed"] is False
    # The layout keeps the shard as it is now (primary 7615): nothing to change.
    assert module(action="layout", shards=FOUR)["changed"] is False
