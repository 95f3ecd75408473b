"""The Redis Cluster layout that the inventory describes, as shards of nodes.

Every host of the cluster's group runs the same number of instances, in groups
of 1 + R (R = replicas per primary). Instance j of group g on host k belongs to
the shard whose primary is instance 0 of group g on host k - j: a shard's
primary and its R replicas sit on R + 1 consecutive hosts (in inventory order,
wrapping round), so a replica is never on its primary's host and every host
carries the same share of primaries and replicas. Adding a host re-points only
the replicas that wrap round to the first hosts.
Pure logic with unit tests (tests/test_redis_cluster_layout.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError


def node_address(address: str, port: int) -> str:
    """host:port, with brackets round an IPv6 address."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def redis_cluster_shards(members: Sequence[Mapping[str, Any]], replicas: int) -> list[list[str]]:
    """Shards as lists of host:port, the preferred primary first.

    ``members`` lists the cluster's hosts in inventory order, each a mapping with
    ``host`` (inventory name), ``address`` (private address) and ``ports`` (its
    instances' ports in the order of redis_pubsub_instances).
    """
    replicas = int(replicas)
    if replicas < 0:
        raise AnsibleFilterError(f"redis_pubsub_cluster_replicas must be 0 or more, got {replicas}")
    hosts = list(members)
    if not hosts:
        raise AnsibleFilterError("redis_pubsub_mode is cluster but the cluster's group has no host")
    per_shard = replicas + 1
    if len(hosts) < per_shard:
        raise AnsibleFilterError(
            f"redis_pubsub_cluster_replicas={replicas} puts every replica on another host than its primary, "
            f"which needs at least {per_shard} hosts in the cluster's group; it has {len(hosts)}"
        )
    counts = {member["host"]: len(member["ports"]) for member in hosts}
    if len(set(counts.values())) != 1 or next(iter(counts.values())) % per_shard != 0:
        raise AnsibleFilterError(
            f"in cluster mode every host lists the same number of redis_pubsub_instances, a multiple of "
            f"1 + redis_pubsub_cluster_replicas = {per_shard} (one primary and {replicas} replica(s) per group); "
            f"instances per host: {counts}"
        )
    groups = next(iter(counts.values())) // per_shard
    shards = []
    for group in range(groups):
        for index in range(len(hosts)):
            shard = []
            for position in range(per_shard):
                member = hosts[(index + position) % len(hosts)]
                shard.append(node_address(str(member["address"]), int(member["ports"][group * per_shard + position])))
            shards.append(shard)
    return shards


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"wsfleet_redis_cluster_shards": redis_cluster_shards}
