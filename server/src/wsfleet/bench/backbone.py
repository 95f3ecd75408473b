"""The Redis a benchmark's servers run on.

Three kinds: :class:`SingleRedis` (one redis-server on a free loopback port),
:class:`LoopbackCluster` (a Redis Cluster of redis-server processes on loopback,
created with ``redis-cli --cluster create``) and :class:`ExistingCluster` (a cluster
someone else runs, given by its seed nodes). Each says how a wsfleet server reaches
it (:meth:`server_args`) and which processes a run measures (:meth:`redis_nodes`);
the first two stop everything they started. The server tests' cluster fixture
(``tests/conftest.py``) is a :class:`LoopbackCluster` too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsfleet.bench.processes import Managed, free_port, wait_for
from wsfleet.bench.runner import BenchError, RedisNode

__all__ = ["Backbone", "ExistingCluster", "LoopbackCluster", "SingleRedis"]

# Throw-away Redis: nothing written to disk, nothing read back after a restart.
NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not on PATH (apt-get install redis-server)")
    return binary


def inline_command(port: int, *args: str) -> str | None:
    """Send one inline command to a loopback Redis; its first reply line, None if down."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall((" ".join(args) + "\r\n").encode())
            return sock.recv(4096).split(b"\r\n")[0].decode()
    except OSError:
        return None


class SingleRedis:
    """One redis-server on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url: str | None = f"redis://127.0.0.1:{self.port}/0"
        self.child = Managed(
            f"redis:{self.port}",
            [
                _redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *NO_PERSISTENCE,
                "--dir",
                str(directory),
            ],
            directory / f"redis-{self.port}.log",
        )

    def server_args(self) -> list[str]:
        assert self.url is not None
        return ["--redis-url", self.url]

    def redis_nodes(self) -> list[RedisNode]:
        return [RedisNode("redis", self.child.pid, "single", self.port)]

    def start(self) -> None:
        self.child.start()
        wait_for(lambda: inline_command(self.port, "PING") == "+PONG", "redis-server")

    def flush(self) -> None:
        inline_command(self.port, "FLUSHALL")

    def stop(self) -> None:
        self.child.stop()


class LoopbackCluster:
    """A Redis Cluster of redis-server processes on fixed loopback ports.

    ``len(ports) / (replicas + 1)`` primaries (``redis-cli --cluster create`` makes
    the first ports primaries and spreads the 16384 slots evenly over them), each
    with ``replicas`` replicas. The cluster bus listens on port + 10000. A small
    ``cluster-node-timeout`` lets a replica take over a killed primary within about
    two seconds, and ``cluster-require-full-coverage no`` keeps the other shards
    serving meanwhile. Every node gets its own folder (``nodes.conf``, log) under
    ``directory``: :meth:`start` creates a new cluster (it removes the nodes.conf of
    an earlier one), :meth:`start_node` restarts a node with the state it had.
    """

    def __init__(
        self,
        directory: Path,
        ports: Sequence[int],
        replicas: int = 0,
        node_timeout_ms: int = 1000,
    ) -> None:
        if len(ports) % (replicas + 1) or len(ports) // (replicas + 1) < 3:
            raise BenchError(
                f"a cluster needs at least 3 primaries: {len(ports)} ports, {replicas} replicas"
            )
        self.directory = directory
        self.ports = tuple(ports)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.children: dict[int, Managed] = {}
        self.url: str | None = None  # no redis:// URL: the Node peers cannot use it

    @property
    def primary_count(self) -> int:
        return len(self.ports) // (self.replicas + 1)

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports[: self.primary_count])

    def server_args(self) -> list[str]:
        return ["--redis-cluster", self.seeds]

    def start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        child = Managed(
            f"redis:{port}",
            [
                _redis_server(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--cluster-require-full-coverage",
                "no",
                # A node back after a kill is in sync at once, not after the default 5 s
                # wait for more replicas to share a diskless transfer.
                "--repl-diskless-sync-delay",
                "0",
                *NO_PERSISTENCE,
                "--dir",
                str(node_dir),
            ],
            node_dir / "redis.log",
        )
        self.children[port] = child
        child.start()
        wait_for(lambda: inline_command(port, "PING") == "+PONG", f"redis-server on {port}")

    def start(self) -> None:
        taken = [port for port in self.ports if inline_command(port, "PING") is not None]
        if taken:
            raise BenchError(f"port(s) {taken} taken: this cluster needs {self.ports}")
        cli = shutil.which("redis-cli")
        if cli is None:
            raise BenchError("redis-cli is not on PATH (it comes with redis-server)")
        # A new cluster: a nodes.conf left in the folder by an earlier one would make
        # its node refuse to join (redis-cli: "is not empty").
        for port in self.ports:
            (self.directory / str(port) / "nodes.conf").unlink(missing_ok=True)
        try:
            for port in self.ports:
                self.start_node(port)
            created = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise BenchError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every running node says cluster_state:ok and every replica's link is up."""

        def settled() -> bool:
            for port, child in self.children.items():
                if not child.alive():
                    continue
                if "cluster_state:ok" not in self.info(port, "CLUSTER", "INFO"):
                    return False
                replication = self.info(port, "INFO", "replication")
                if "role:slave" in replication and "master_link_status:up" not in replication:
                    return False
            return len(self.primaries()) == self.primary_count

        wait_for(settled, "the cluster to settle", timeout)

    def command(self, port: int, *args: str) -> str | None:
        return inline_command(port, *args)

    def client(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def info(self, port: int, *args: str) -> str:
        """A command's reply as text ("" from a node that is down or loading)."""
        try:
            with self.client(port) as client:
                reply = client.execute_command(*args)
        except Exception:
            return ""
        if isinstance(reply, dict):
            return "\n".join(f"{key}:{value}" for key, value in reply.items())
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def nodes(self) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by a live node: id, port, flags, primary id, slot ranges."""
        for port, child in self.children.items():
            if not child.alive():
                continue
            text = self.info(port, "CLUSTER", "NODES")
            if not text:
                continue  # a node that is down: ask the next one
            nodes = []
            for line in text.strip().splitlines():
                fields = line.split()
                slots = []
                for spec in fields[8:]:
                    if spec.startswith("["):
                        continue  # a slot being migrated
                    low, _, high = spec.partition("-")
                    slots.append((int(low), int(high or low)))
                nodes.append(
                    {
                        "id": fields[0],
                        "port": int(fields[1].split(":")[1].split("@")[0]),
                        "flags": fields[2].split(","),
                        "primary": fields[3],
                        "slots": slots,
                    }
                )
            return nodes
        return []

    def primaries(self) -> list[dict[str, Any]]:
        return [
            node
            for node in self.nodes()
            if "master" in node["flags"] and "fail" not in node["flags"] and node["slots"]
        ]

    def primary_ports(self, keys: Sequence[str]) -> list[int | None]:
        """The port of the primary that owns each key's slot now (None: not known)."""
        owners = {
            slot: node["port"]
            for node in self.primaries()
            for low, high in node["slots"]
            for slot in range(low, high + 1)
        }
        ports: list[int | None] = []
        for key in keys:
            reply = inline_command(self.ports[0], "CLUSTER", "KEYSLOT", key)
            slot = int(reply[1:]) if reply and reply.startswith(":") else None
            ports.append(None if slot is None else owners.get(slot))
        return ports

    def redis_nodes(self) -> list[RedisNode]:
        """Every running node with its role now, primaries first, by port."""
        primaries = {node["port"] for node in self.primaries()}
        found = [
            RedisNode(
                f"{'primary' if port in primaries else 'replica'} :{port}",
                child.pid,
                "primary" if port in primaries else "replica",
                port,
            )
            for port, child in sorted(self.children.items())
            if child.alive()
        ]
        return sorted(found, key=lambda node: node.role != "primary")

    def kill(self, port: int) -> None:
        """SIGKILL one node (it can come back with :meth:`start_node`)."""
        self.children[port].kill()

    def flush(self) -> None:
        for node in self.primaries():
            inline_command(node["port"], "FLUSHALL")

    def stop(self) -> None:
        for child in self.children.values():
            if child.alive():
                assert child.process is not None
                child.process.terminate()
        for child in self.children.values():
            child.stop(timeout=10)
        self.children.clear()


class ExistingCluster:
    """A Redis Cluster the suite does not own (``--redis-cluster``): used, flushed, not measured."""

    url: str | None = None

    def __init__(self, seeds: str) -> None:
        self.seeds = seeds

    def server_args(self) -> list[str]:
        return ["--redis-cluster", self.seeds]

    def redis_nodes(self) -> list[RedisNode]:
        return []  # its processes may be anywhere: no CPU figures

    def start(self) -> None:
        pass

    def flush(self) -> None:
        from redis.cluster import ClusterNode, RedisCluster

        nodes = []
        for item in self.seeds.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append(ClusterNode(host, int(port)))  # type: ignore[no-untyped-call]
        with RedisCluster(startup_nodes=nodes) as cluster:
            cluster.flushall(target_nodes=RedisCluster.PRIMARIES)

    def stop(self) -> None:
        pass


Backbone = SingleRedis | LoopbackCluster | ExistingCluster
