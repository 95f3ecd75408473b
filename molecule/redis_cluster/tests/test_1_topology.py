"""The cluster the role built: three primaries over all 16384 slots, one replica
each on another host, cluster_state ok everywhere, and a wsfleet user that can
do what the server does and nothing else."""

from __future__ import annotations

from conftest import REDIS_PORTS, WSFLEET
from redis_nodes import SLOTS, cli, cluster_state, healthy, nodes_seen_by

REDIS = ["rc-redis1", "rc-redis2", "rc-redis3"]


def test_three_primaries_cover_every_slot_and_each_has_a_replica_on_another_host(machine):
    nodes = nodes_seen_by(machine, "rc-redis1", 6379)
    primaries = [node for node in nodes if node.is_primary]
    replicas = [node for node in nodes if "slave" in node.flags]
    assert len(primaries) == 3 and len(replicas) == 3, "\n".join(map(str, nodes))
    assert sum(node.slot_count for node in primaries) == SLOTS
    assert {node.host for node in primaries} == set(REDIS)
    by_id = {node.id: node for node in nodes}
    for replica in replicas:
        assert by_id[replica.primary_id].host != replica.host, f"{replica.name} replicates a node of its own host"
    assert healthy(nodes, primaries=3), "\n".join(map(str, nodes))


def test_every_node_sees_the_cluster_ok(machine):
    for host in REDIS:
        for port in REDIS_PORTS:
            assert cluster_state(machine, host, port) == "ok", f"{host}:{port}"
            assert len(nodes_seen_by(machine, host, port)) == 6, f"{host}:{port}"


def test_the_wsfleet_user_cannot_administer_or_read_the_keyspace(machine):
    for command in (["CONFIG", "GET", "maxmemory"], ["KEYS", "*"], ["FLUSHALL"], ["CLUSTER", "RESET"]):
        reply = cli(machine, "rc-redis1", 6379, *command, user=WSFLEET)
        assert "NOPERM" in reply, f"{command}: {reply}"
    # ...while it can log in and use what the server needs (PING here).
    assert cli(machine, "rc-redis1", 6379, "PING", user=WSFLEET).strip() == "PONG"
