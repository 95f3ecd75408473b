"""The Redis Cluster layout the redis_pubsub role derives from the inventory,
tested as pure logic; molecule/redis_cluster proves it on real nodes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

PLUGIN = Path(__file__).resolve().parents[1] / "roles/redis_pubsub/filter_plugins/wsfleet_redis_cluster.py"
spec = importlib.util.spec_from_file_location("wsfleet_redis_cluster", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


def hosts(count: int, ports: list[int]) -> list[dict]:
    return [{"host": f"redis-{n}", "address": f"10.0.0.{31 + n}", "ports": ports} for n in range(count)]


def host_of(node: str) -> str:
    return node.rsplit(":", 1)[0]


def test_three_hosts_two_instances_make_three_shards_of_two():
    shards = plugin.redis_cluster_shards(hosts(3, [6379, 6380]), 1)
    assert shards == [
        ["10.0.0.31:6379", "10.0.0.32:6380"],
        ["10.0.0.32:6379", "10.0.0.33:6380"],
        ["10.0.0.33:6379", "10.0.0.31:6380"],
    ]


@pytest.mark.parametrize(
    ("count", "ports", "replicas"), [(3, [1, 2], 1), (4, [1, 2], 1), (5, [1, 2, 3, 4], 1), (4, [1, 2, 3], 2), (2, [1], 0)]
)
def test_a_replica_is_never_on_its_primarys_host_and_every_node_is_used_once(count, ports, replicas):
    shards = plugin.redis_cluster_shards(hosts(count, ports), replicas)
    nodes = [node for shard in shards for node in shard]
    assert len(nodes) == len(set(nodes)) == count * len(ports)
    for shard in shards:
        assert len(shard) == replicas + 1
        assert len({host_of(node) for node in shard}) == len(shard)
    primaries_per_host = {host_of(shard[0]) for shard in shards}
    assert len(primaries_per_host) == count  # every host carries primaries


def test_adding_a_host_keeps_the_first_shards_and_repoints_only_the_wrapping_replica():
    before = plugin.redis_cluster_shards(hosts(3, [6379, 6380]), 1)
    after = plugin.redis_cluster_shards(hosts(4, [6379, 6380]), 1)
    assert after[:2] == before[:2]
    assert after[2] == ["10.0.0.33:6379", "10.0.0.34:6380"]
    assert after[3] == ["10.0.0.34:6379", "10.0.0.31:6380"]


def test_ipv6_addresses_are_bracketed():
    members = [{"host": "a", "address": "fd00::1", "ports": [6379]}, {"host": "b", "address": "fd00::2", "ports": [6379]}]
    assert plugin.redis_cluster_shards(members, 0) == [["[fd00::1]:6379"], ["[fd00::2]:6379"]]


@pytest.mark.parametrize(
    ("members", "replicas", "names"),
    [
        (hosts(1, [1, 2]), 1, "at least 2 hosts"),
        (hosts(3, [1]), 1, "a multiple of 1 + redis_pubsub_cluster_replicas = 2"),
        ([*hosts(2, [1, 2]), {"host": "odd", "address": "10.0.0.9", "ports": [1, 2, 3, 4]}], 1, "'odd': 4"),
        ([], 1, "has no host"),
        (hosts(3, [1, 2]), -1, "redis_pubsub_cluster_replicas must be 0 or more"),
    ],
)
def test_a_layout_that_cannot_work_fails_naming_the_variables(members, replicas, names):
    with pytest.raises(AnsibleFilterError, match=names.replace("+", r"\+")):
        plugin.redis_cluster_shards(members, replicas)
