"""``--publish-replicas`` on one Redis with a replica: ack only what WAIT confirmed.

A real redis-server and a real replica of it (``--replicaof``). With enough replicas
the publisher gets ``ack``; with more replicas asked for than exist, or once the
replica is gone, it gets ``unavailable`` saying the message may still be delivered,
and members do get it (PROTOCOL.md), over WebSocket and over ``POST /api/publish``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    Launcher,
    RedisProcess,
    connect,
    join,
    publish,
    recv_type,
    unique_room,
    wait_until,
)


@pytest.fixture
def primary_with_replica(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    (tmp_path / "primary").mkdir()
    (tmp_path / "replica").mkdir()
    primary = RedisProcess(tmp_path / "primary")
    primary.start()
    # Without the default 5 s wait for more replicas to share one diskless transfer.
    primary.command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    replica = RedisProcess(tmp_path / "replica", ("--replicaof", "127.0.0.1", str(primary.port)))
    replica.start()
    try:
        wait_until(lambda: primary.command("WAIT", "1", "100") == ":1", "the replica to be in sync")
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


async def test_acks_wait_for_replicas_and_unconfirmed_publishes_say_so(
    launch: Launcher, primary_with_replica: tuple[RedisProcess, RedisProcess]
) -> None:
    primary, replica = primary_with_replica
    confirmed = launch("--publish-replicas", "1", redis=primary)
    too_many = launch(
        "--publish-replicas",
        "2",
        "--publish-replicas-timeout",
        "0.2",
        "--api-key",
        "k",
        redis=primary,
    )
    room = unique_room("replicas")
    listener, _ = await connect(confirmed.url)
    await join(listener, room)

    publisher, _ = await connect(confirmed.url)
    ack = await publish(publisher, room, "on one replica", "1")
    assert ack["type"] == "ack", ack
    assert (await recv_type(listener, "message"))["offset"] == ack["offset"]

    # Two replicas asked for, one exists: not acked, but stored and delivered.
    other, _ = await connect(too_many.url)
    answer = await publish(other, room, "on too few replicas", "2")
    assert (answer["type"], answer["code"]) == ("error", "unavailable"), answer
    assert "may still be delivered" in answer["message"], answer
    delivered = await recv_type(listener, "message")
    assert delivered["content"] == "on too few replicas"
    status, _, body = too_many.http(
        "POST",
        "/api/publish",
        json.dumps({"room": room, "content": "api"}).encode(),
        {"Authorization": "Bearer k"},
    )
    assert status == 503, body
    assert "may still be delivered" in json.loads(body)["message"]
    assert (await recv_type(listener, "message"))["content"] == "api"

    # The replica is gone: nothing can be confirmed any more.
    replica.stop()
    wait_until(lambda: primary.command("WAIT", "1", "10") == ":0", "the replica to be gone")
    answer = await publish(publisher, room, "no replica", "3")
    assert (answer["type"], answer["code"]) == ("error", "unavailable"), answer
    assert "may still be delivered" in answer["message"], answer
    for connection in (listener, publisher, other):
        await connection.close()
