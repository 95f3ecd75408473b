"""kill -9 of a primary, once per shard, under the stream: its replica takes
over, publishes to that shard are answered `unavailable` meanwhile and acked
again soon after, and with publish_replicas 1 no listener loses or repeats an
acknowledged message. The killed node (restarted by systemd) comes back as a
replica and catches up before the next round."""

from __future__ import annotations

import asyncio
import sys
import time

from redis_nodes import nodes_seen_by, owner, wait_until_healthy
from traffic import Stream, assert_exact, room_slot, rooms_on_every_shard


async def kill_each_primary(machine) -> tuple[list[dict], dict[str, int]]:
    stream = Stream(rooms_on_every_shard(machine, "kill"))
    rounds = []
    try:
        await stream.start()
        await stream.flow(3)
        for rooms in stream.rooms.values():
            slot = room_slot(rooms[0])
            nodes = await asyncio.to_thread(wait_until_healthy, machine, 3)
            victim = owner(nodes, slot)
            assert victim is not None
            replica = next(node for node in nodes if node.primary_id == victim.id)
            await asyncio.to_thread(
                machine(victim.host).check_output, f"systemctl kill -s KILL wsfleet-redis@{victim.port}.service"
            )
            # Timed from the kill's completion: a publish sent before it may still have been acked.
            killed_at = time.monotonic()
            while True:
                stream.raise_failures()
                seen = await asyncio.to_thread(nodes_seen_by, machine, replica.host, replica.port)
                successor = owner(seen, slot)
                if successor is not None and successor.id == replica.id:
                    break
                assert time.monotonic() - killed_at < 60, f"{replica.name} never took over from {victim.name}"
                await asyncio.sleep(0.1)
            promoted_after = time.monotonic() - killed_at
            while (acked_at := stream.publishes.first_ack_after(rooms, killed_at)) is None:
                stream.raise_failures()
                assert time.monotonic() - killed_at < 90, f"publishes to {rooms} never recovered"
                await asyncio.sleep(0.05)
            # Back as a replica of its successor and in sync before the next round.
            nodes = await asyncio.to_thread(wait_until_healthy, machine, 3)
            back = next(node for node in nodes if node.id == victim.id)
            assert "slave" in back.flags and back.primary_id == replica.id, back
            rounds.append(
                {
                    "killed": victim.name,
                    "promoted": replica.name,
                    "promoted_after_s": round(promoted_after, 1),
                    "publishes_acked_again_after_s": round(acked_at - killed_at, 1),
                    "back_in_sync_after_s": round(time.monotonic() - killed_at, 1),
                }
            )
            await stream.flow(2)
        return rounds, await stream.finish()
    finally:
        await stream.abort()


def test_a_killed_primary_fails_over_without_losing_an_acked_message(machine):
    rounds, figures = asyncio.run(kill_each_primary(machine))
    print(f"\nkill -9 rounds: {rounds}\nstream: {figures}", file=sys.stderr)
    assert len(rounds) == 3
    assert_exact(figures)
    assert figures["unavailable"] > 0, figures  # publishers were told, not ignored
