"""A fourth Redis host added to the inventory and site.yml run again under the
stream: its nodes join, its primary takes a fair share of the slots (busy rooms
move with them), its replica sits on another host, no listener loses or repeats
an acknowledged message; a second run of the Redis tier changes nothing."""

from __future__ import annotations

import asyncio
import sys

from ansible_run import SCENARIO, failures, run_project_playbook, run_under_stream
from redis_nodes import SLOTS, owner, wait_until_healthy
from traffic import Stream, assert_exact, room_slot, rooms_on_every_shard

EXTRA_INVENTORY = SCENARIO / "inventory" / "hosts.yml"
NEW_HOST = "rc-redis4"


def test_a_fourth_host_joins_and_takes_its_share_under_traffic(machine):
    stream = Stream(rooms_on_every_shard(machine, "grow"))
    result, seconds, figures = asyncio.run(run_under_stream(stream, "site.yml", EXTRA_INVENTORY))
    assert result.returncode == 0, failures(result)
    nodes = wait_until_healthy(machine, 4)
    primaries = {node.name: node.slot_count for node in nodes if node.is_primary}
    by_id = {node.id: node for node in nodes}
    moved = [room for room in stream.all_rooms if owner(nodes, room_slot(room)).host == NEW_HOST]
    print(
        f"\nsite.yml with {NEW_HOST}: {seconds:.0f} s; slots per primary {primaries}; "
        f"rooms now on {NEW_HOST}: {len(moved)} of {len(stream.all_rooms)}; stream: {figures}",
        file=sys.stderr,
    )
    new_primaries = [node for node in nodes if node.is_primary and node.host == NEW_HOST]
    assert len(new_primaries) == 1, primaries
    assert new_primaries[0].slot_count >= SLOTS // 4 - 64, primaries
    assert all(count >= SLOTS // 4 - 64 for count in primaries.values()), primaries
    for replica in (node for node in nodes if "slave" in node.flags):
        assert by_id[replica.primary_id].host != replica.host, f"{replica.name} replicates its own host"
    assert any(node.host == NEW_HOST for node in nodes if "slave" in node.flags), "no replica on the new host"
    assert moved, "no busy room moved to the new primary"
    assert_exact(figures)


def test_a_second_run_with_the_fourth_host_changes_nothing():
    # The Redis tier: the whole site's second run is the scenario's idempotence step.
    result = asyncio.run(run_project_playbook("site.yml", EXTRA_INVENTORY, extra_args=("--tags", "redis")))
    assert result.returncode == 0, failures(result)
    recap = result.recap()
    assert NEW_HOST in recap, result.output[-3000:]
    changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
    assert not changed, f"{changed}\n{failures(result)}"
