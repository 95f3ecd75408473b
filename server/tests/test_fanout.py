"""Fanout across instances: every member on every instance sees a room's messages,
in the same order, exactly once."""

from __future__ import annotations

import asyncio
import json

from conftest import ServerProcess, connect, join, publish, recv_type, send_json, unique_room


async def test_three_instances_deliver_one_room_in_one_order(cluster: list[ServerProcess]) -> None:
    room = unique_room("fanout")
    members = []
    for server in cluster:
        for _ in range(2):
            connection, welcome = await connect(server.url)
            assert welcome["server"] == f"test-{server.port}"
            await join(connection, room)
            members.append(connection)

    # Three publishers, one per instance, interleaving 20 messages each.
    async def publish_many(connection: object, name: str) -> list[str]:
        offsets = []
        for index in range(20):
            ack = await publish(connection, room, {"by": name, "n": index}, f"{name}-{index}")  # type: ignore[arg-type]
            assert ack["type"] == "ack", ack
            offsets.append(ack["offset"])
        return offsets

    publishers = [(await connect(server.url))[0] for server in cluster]
    acked = await asyncio.gather(*(publish_many(p, f"p{i}") for i, p in enumerate(publishers)))
    acked_offsets = {offset for offsets in acked for offset in offsets}
    assert len(acked_offsets) == 60

    sequences = []
    for member in members:
        received = [await recv_type(member, "message") for _ in range(60)]
        sequences.append([frame["offset"] for frame in received])
        for frame in received:
            assert frame["room"] == room
            assert isinstance(frame["from"], str) and frame["from"]
            assert frame["ts"] == int(frame["offset"].split("-")[0])
    assert all(sequence == sequences[0] for sequence in sequences)
    assert set(sequences[0]) == acked_offsets
    as_pairs = [tuple(map(int, offset.split("-"))) for offset in sequences[0]]
    assert as_pairs == sorted(as_pairs)
    for connection in members + publishers:
        await connection.close()


async def test_sender_receives_its_own_message_and_from_is_its_connection_id(
    cluster: list[ServerProcess],
) -> None:
    room = unique_room()
    connection, welcome = await connect(cluster[0].url)
    await join(connection, room)
    await send_json(connection, {"type": "message", "room": room, "content": [1, "two"], "id": "x"})
    frames = [json.loads(await connection.recv()) for _ in range(2)]
    kinds = {frame["type"]: frame for frame in frames}
    assert kinds["ack"]["id"] == "x"
    assert kinds["message"]["from"] == welcome["conn"]
    assert kinds["message"]["content"] == [1, "two"]
    assert kinds["message"]["offset"] == kinds["ack"]["offset"]
    await connection.close()


async def test_publishing_without_joining_is_allowed_and_leave_stops_delivery(
    cluster: list[ServerProcess],
) -> None:
    room = unique_room()
    listener, _ = await connect(cluster[1].url)
    await join(listener, room)
    outsider, _ = await connect(cluster[2].url)
    assert (await publish(outsider, room, "first", "1"))["type"] == "ack"
    assert (await recv_type(listener, "message"))["content"] == "first"

    await send_json(listener, {"type": "leave", "room": room})
    assert await recv_type(listener, "left") == {"type": "left", "room": room}
    await publish(outsider, room, "second", "2")
    # A ping answered after the publish proves nothing else was queued before it.
    await send_json(listener, {"type": "ping", "id": "after"})
    assert json.loads(await listener.recv()) == {"type": "pong", "id": "after"}
    await listener.close()
    await outsider.close()
