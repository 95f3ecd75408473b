"""The cluster as its nodes see it: redis-cli on the Redis hosts, over the
scenario's SSH connection, as the operators' ACL user (REDISCLI_AUTH keeps the
password out of the command's arguments on the Redis side of things)."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from conftest import ADMIN, REDIS_HOSTS, REDIS_PORTS

SLOTS = 16384
# The flavor's client (molecule.yml: WSFLEET_RC_FLAVOR, redis by default).
CLI = "/usr/bin/valkey-cli" if os.environ.get("WSFLEET_RC_FLAVOR", "redis") == "valkey" else "/usr/bin/redis-cli"


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES."""

    id: str
    address: str
    port: int
    flags: frozenset[str]
    primary_id: str | None  # the node a replica follows
    link: str
    slots: tuple[tuple[int, int], ...]  # inclusive ranges

    @property
    def host(self) -> str:
        return REDIS_HOSTS.get(self.address, self.address)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)

    def owns(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_nodes(text: str) -> list[Node]:
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        address, _, port = fields[1].split("@")[0].rpartition(":")
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being imported or migrated
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            Node(
                id=fields[0],
                address=address,
                port=int(port),
                flags=frozenset(fields[2].split(",")),
                primary_id=None if fields[3] == "-" else fields[3],
                link=fields[7],
                slots=tuple(slots),
            )
        )
    return nodes


def cli_command(*args: str, port: int, user: tuple[str, str] = ADMIN, address: str = "127.0.0.1") -> str:
    name, password = user
    arguments = " ".join(shlex.quote(str(arg)) for arg in args)
    return (
        f"REDISCLI_AUTH={shlex.quote(password)} {CLI} --no-auth-warning "
        f"--user {shlex.quote(name)} -h {address} -p {port} {arguments}"
    )


def cli(machine: Callable, host: str, port: int, *args: str, user: tuple[str, str] = ADMIN) -> str:
    """One redis-cli command on one node; its raw output (errors included)."""
    result = machine(host).run(cli_command(*args, port=port, user=user))
    return result.stdout + result.stderr


def cli_batch(machine: Callable, host: str, port: int, commands: Iterable[str]) -> list[str]:
    """Several commands through one redis-cli (one SSH round trip): one reply line each."""
    script = "\n".join(commands) + "\n"
    result = machine(host).run(f"printf %s {shlex.quote(script)} | {cli_command(port=port)}")
    return result.stdout.strip().splitlines()


def nodes_seen_by(machine: Callable, host: str, port: int) -> list[Node]:
    """The node's CLUSTER NODES; nothing when it does not answer (killed, restarting)."""
    result = machine(host).run(cli_command("CLUSTER", "NODES", port=port))
    if result.rc != 0 or not result.stdout.strip() or "Could not connect" in result.stdout + result.stderr:
        return []
    return parse_nodes(result.stdout)


def info(machine: Callable, host: str, port: int, section: str) -> dict[str, str]:
    text = cli(machine, host, port, "INFO", section)
    return dict(line.split(":", 1) for line in text.replace("\r", "").splitlines() if ":" in line)


def cluster_state(machine: Callable, host: str, port: int) -> str:
    text = cli(machine, host, port, "CLUSTER", "INFO")
    fields = dict(line.split(":", 1) for line in text.replace("\r", "").splitlines() if ":" in line)
    return fields.get("cluster_state", "?")


def cluster_nodes(machine: Callable, hosts: Iterable[str] | None = None) -> list[Node]:
    """CLUSTER NODES from the first node that answers (a killed one does not)."""
    for host in hosts or REDIS_HOSTS.values():
        for port in REDIS_PORTS:
            nodes = nodes_seen_by(machine, host, port)
            if nodes:
                return nodes
    raise AssertionError("no Redis node answered CLUSTER NODES")


def owner(nodes: list[Node], slot: int) -> Node | None:
    return next((node for node in nodes if node.is_primary and not node.failing and node.owns(slot)), None)


def healthy(nodes: list[Node], primaries: int) -> bool:
    """Every node up and linked, `primaries` primaries with all slots, one replica each."""
    live_primaries = [node for node in nodes if node.is_primary and node.slots]
    replicas = [node for node in nodes if "slave" in node.flags]
    return (
        not any(node.failing or node.link != "connected" for node in nodes)
        and len(live_primaries) == primaries
        and sum(node.slot_count for node in live_primaries) == SLOTS
        and sorted(node.primary_id for node in replicas) == sorted(node.id for node in live_primaries)
    )


def in_sync(machine: Callable, replica: Node) -> bool:
    fields = info(machine, replica.host, replica.port, "replication")
    return (
        fields.get("role") == "slave"
        and fields.get("master_link_status") == "up"
        and fields.get("master_sync_in_progress") == "0"
    )


def wait_until_healthy(machine: Callable, primaries: int, seconds: float = 90) -> list[Node]:
    """Every node healthy in every node's view, every replica in sync and cluster_state ok."""
    deadline = time.monotonic() + seconds
    while True:
        nodes = cluster_nodes(machine)
        if (
            healthy(nodes, primaries)
            and all(
                healthy(nodes_seen_by(machine, node.host, node.port), primaries)
                and cluster_state(machine, node.host, node.port) == "ok"
                for node in nodes
            )
            and all(in_sync(machine, node) for node in nodes if "slave" in node.flags)
        ):
            return nodes
        assert time.monotonic() < deadline, "\n".join(map(str, nodes))
        time.sleep(1)
