"""Resume after a dropped connection: no gap, no duplicate; a lost history means a
new epoch and ``recovered: false``."""

from __future__ import annotations

import asyncio

from conftest import (
    Launcher,
    RedisProcess,
    ServerProcess,
    connect,
    join,
    publish,
    recv_type,
    unique_room,
)
from wsfleet.client import Client, Message, RoomResync


async def test_rejoin_with_since_replays_exactly_what_was_missed(
    cluster: list[ServerProcess],
) -> None:
    room = unique_room("resume")
    publisher, _ = await connect(cluster[0].url)
    reader, _ = await connect(cluster[1].url)
    first = await join(reader, room)
    assert first["offset"] is None and first["recovered"] is False
    ack = await publish(publisher, room, 0, "0")
    seen = await recv_type(reader, "message")
    assert seen["offset"] == ack["offset"]
    await reader.close()

    missed = [(await publish(publisher, room, n, str(n)))["offset"] for n in range(1, 6)]
    reader, _ = await connect(cluster[2].url)
    joined = await join(reader, room, since=seen["offset"], epoch=first["epoch"])
    assert joined["recovered"] is True
    assert joined["replayed"] == 5
    assert joined["offset"] == missed[-1]
    assert joined["epoch"] == first["epoch"]
    replayed = [await recv_type(reader, "message") for _ in range(5)]
    assert [frame["offset"] for frame in replayed] == missed
    assert [frame["content"] for frame in replayed] == [1, 2, 3, 4, 5]
    live = await publish(publisher, room, 6, "6")
    assert (await recv_type(reader, "message"))["offset"] == live["offset"]
    await reader.close()
    await publisher.close()


async def test_resume_during_continuous_publishing_has_no_gap_and_no_duplicate(
    cluster: list[ServerProcess],
) -> None:
    room = unique_room("race")
    total = 150
    async with Client(cluster[0].url, rooms=[room], backoff_base=0.01, backoff_max=0.05) as client:
        await client.wait_connected()

        received: list[int] = []

        async def publish_all() -> None:
            publisher, _ = await connect(cluster[1].url)
            for n in range(total):
                # Never more than 40 ahead of the reader: the cluster keeps 50 messages
                # of history, and a reconnect on a loaded machine can take a while.
                while n - len(received) > 40:
                    await asyncio.sleep(0.005)
                assert (await publish(publisher, room, n, str(n)))["type"] == "ack"
            await publisher.close()

        producer = asyncio.create_task(publish_all())
        drops = 0
        while len(received) < total:
            event = await asyncio.wait_for(client.__aiter__().__anext__(), 10)
            assert isinstance(event, Message), event
            received.append(event.content)
            # Cut the connection twice mid-stream; the client reconnects and resumes.
            if len(received) in (40, 90) and client._connection is not None:
                drops += 1
                client._connection.transport.abort()
        await producer
    assert drops == 2
    assert received == list(range(total))
    assert client.stats.connects >= 3


async def test_missing_exactly_history_size_still_recovers_one_more_does_not(
    launch: Launcher,
) -> None:
    server = launch("--history-size", "5")
    room = unique_room("trim")
    publisher, _ = await connect(server.url)
    reader, _ = await connect(server.url)
    joined = await join(reader, room)
    seen = (await publish(publisher, room, "base", "b"))["offset"]
    for n in range(5):
        await publish(publisher, room, n, str(n))
    exact = await join(reader, room, since=seen, epoch=joined["epoch"])
    assert (exact["recovered"], exact["replayed"]) == (True, 5)

    await publish(publisher, room, 5, "5")
    too_old = await join(reader, room, since=seen, epoch=joined["epoch"])
    assert (too_old["recovered"], too_old["replayed"]) == (False, 0)
    await reader.close()
    await publisher.close()


async def test_lost_history_means_new_epoch_and_not_recovered(
    cluster: list[ServerProcess], redis_server: RedisProcess
) -> None:
    room = unique_room("epoch")
    publisher, _ = await connect(cluster[0].url)
    reader, _ = await connect(cluster[1].url)
    joined = await join(reader, room)
    offset = (await publish(publisher, room, "before", "1"))["offset"]
    await recv_type(reader, "message")
    await reader.close()

    # The history is lost (as in a restart without persistence), then life goes on.
    assert (
        redis_server.command("DEL", f"wsfleet:{{{room}}}:history", f"wsfleet:{{{room}}}:epoch")
        == ":2"
    )
    await publish(publisher, room, "after", "2")
    reader, _ = await connect(cluster[1].url)
    rejoined = await join(reader, room, since=offset, epoch=joined["epoch"])
    assert rejoined["recovered"] is False
    assert rejoined["replayed"] == 0
    assert rejoined["epoch"] != joined["epoch"]
    await reader.close()
    await publisher.close()


async def test_wrong_epoch_is_not_recovered(cluster: list[ServerProcess]) -> None:
    room = unique_room()
    connection, _ = await connect(cluster[0].url)
    await join(connection, room)
    offset = (await publish(connection, room, "x", "1"))["offset"]
    joined = await join(connection, room, since=offset, epoch="not-the-epoch")
    assert (joined["recovered"], joined["replayed"]) == (False, 0)
    await connection.close()


async def test_client_reports_resync_when_history_is_lost(
    cluster: list[ServerProcess], redis_server: RedisProcess
) -> None:
    room = unique_room("resync")
    async with Client(cluster[0].url, rooms=[room], backoff_base=0.01) as client:
        await client.wait_connected()
        publisher, _ = await connect(cluster[1].url)
        await publish(publisher, room, "one", "1")
        assert (await client.next_message()).content == "one"
        redis_server.command("DEL", f"wsfleet:{{{room}}}:history", f"wsfleet:{{{room}}}:epoch")
        assert client._connection is not None
        client._connection.transport.abort()
        event = await asyncio.wait_for(client.__aiter__().__anext__(), 10)
        assert isinstance(event, RoomResync)
        await publish(publisher, room, "two", "2")
        assert (await client.next_message()).content == "two"
        await publisher.close()
