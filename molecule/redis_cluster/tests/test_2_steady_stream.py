"""A steady stream, no disturbance: both instances healthy on the cluster, and
every listener of rooms on all three shards ends with every acked message once,
in order."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request

from conftest import HEALTH_URLS
from traffic import Stream, assert_exact, rooms_on_every_shard


def health(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def steady(machine) -> tuple[Stream, dict[str, int]]:
    stream = Stream(rooms_on_every_shard(machine, "steady"))
    try:
        await stream.start()
        await stream.flow(10)
        return stream, await stream.finish()
    finally:
        await stream.abort()


def test_both_instances_report_the_cluster_up():
    for url in HEALTH_URLS:
        assert health(url)["redis"] == "up", url


def test_rooms_on_every_shard_get_every_acked_message_once_in_order(machine):
    stream, figures = asyncio.run(steady(machine))
    print(f"\nsteady stream, rooms per primary {stream.rooms}: {figures}", file=sys.stderr)
    assert len(stream.rooms) == 3, stream.rooms
    assert_exact(figures)
    assert figures["unavailable"] == figures["timed_out"] == figures["interrupted"] == 0, figures
    assert figures["duplicates_dropped_by_client"] == 0, figures
