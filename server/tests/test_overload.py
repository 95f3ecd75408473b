"""Overload shedding: past ``--publish-queue`` waiting publishes, refuse at once.

A real redis-server whose writes are paused (``CLIENT PAUSE ... WRITE``) stands in
for a Redis that cannot keep up: publishes wait for it. The server lets
``--publish-queue`` of them wait and answers every further one at once with
``unavailable`` ("overloaded"), over WebSocket and ``POST /api/publish``, instead of
queueing without bound. A refused message is never stored or delivered; an acked one
reaches the member exactly once, in order, round after round.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from conftest import (
    Launcher,
    RedisProcess,
    connect,
    join,
    publish,
    recv_type,
    unique_room,
    wait_until_async,
)
from wsfleet.protocol import offset_key

QUEUE = 6
PUBLISHERS = 20
ROUNDS = 5


async def assert_delivered_once_in_order(
    member: Any, publisher: Any, room: str, acked: list[str]
) -> None:
    """Publish a last message; before it, the member got exactly ``acked``, once, in order."""
    assert (await publish(publisher, room, "end", "end"))["type"] == "ack"
    received: list[str] = []
    offsets: list[tuple[int, int]] = []
    while True:
        frame = await recv_type(member, "message")
        offsets.append(offset_key(frame["offset"]))
        if frame["content"] == "end":
            break
        received.append(frame["content"])
    assert sorted(received) == sorted(acked), "every acked message once, no refused one"
    assert offsets == sorted(set(offsets)), "in offset order, none twice"


async def test_publishes_past_the_queue_are_refused_at_once_and_never_delivered(
    launch: Launcher, own_redis: RedisProcess
) -> None:
    server = launch(
        "--publish-queue",
        str(QUEUE),
        "--rate-limit",
        "2000",
        "--rate-burst",
        "2000",
        "--api-key",
        "k",
        redis=own_redis,
    )
    room = unique_room("overload")
    member, _ = await connect(server.url)
    await join(member, room)
    publishers = [(await connect(server.url))[0] for _ in range(PUBLISHERS)]

    acked: list[str] = []
    refused = 0
    for round_number in range(ROUNDS):
        # Redis answers nothing that writes for a while: every publish waits for it.
        own_redis.command("CLIENT", "PAUSE", "1500", "WRITE")
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await asyncio.gather(
            *(
                publish(connection, room, f"r{round_number}-p{index}", f"r{round_number}-{index}")
                for index, connection in enumerate(publishers)
            )
        )
        waited = loop.time() - started
        own_redis.command("CLIENT", "UNPAUSE")
        round_acked = [
            f"r{round_number}-p{reply['id'].split('-')[1]}"
            for reply in replies
            if reply["type"] == "ack"
        ]
        round_refused = [reply for reply in replies if reply["type"] == "error"]
        assert len(round_acked) == QUEUE, replies
        assert len(round_refused) == PUBLISHERS - QUEUE, replies
        for reply in round_refused:
            assert reply["code"] == "unavailable", reply
            assert "overloaded" in reply["message"], reply
        assert waited >= 1.0, "the admitted publishes waited for Redis"
        acked.extend(round_acked)
        refused += len(round_refused)

    # While the queue is full, the HTTP publish API refuses too (503, Retry-After).
    own_redis.command("CLIENT", "PAUSE", "1500", "WRITE")
    waiting = [
        asyncio.create_task(publish(connection, room, f"http-round-p{index}", f"h-{index}"))
        for index, connection in enumerate(publishers[:QUEUE])
    ]
    await asyncio.sleep(0.3)
    status, headers, body = await asyncio.to_thread(
        server.http,
        "POST",
        "/api/publish",
        json.dumps({"room": room, "content": "refused-http"}).encode(),
        {"Authorization": "Bearer k", "Content-Type": "application/json"},
    )
    own_redis.command("CLIENT", "UNPAUSE")
    assert status == 503, body
    assert headers.get("Retry-After") == "1"
    assert "overloaded" in json.loads(body)["message"]
    acked.extend(f"http-round-p{index}" for index, _ in enumerate(await asyncio.gather(*waiting)))
    refused += 1

    await assert_delivered_once_in_order(member, publishers[0], room, acked)
    assert server.metric("ws_publishes_shed_total") == refused

    for connection in (member, *publishers):
        await connection.close()


async def test_a_lagging_event_loop_sheds_publishes_until_it_catches_up(
    launch: Launcher, own_redis: RedisProcess
) -> None:
    """``--shed-lag``: a stalled instance (SIGSTOP, as a CPU-starved one) refuses
    publishes while its loop lag stays above the bound, then acks again; only what
    was acked is delivered, once and in order."""
    server = launch(
        "--shed-lag", "0.05", "--rate-limit", "2000", "--rate-burst", "2000", redis=own_redis
    )
    room = unique_room("lag")
    member, _ = await connect(server.url)
    await join(member, room)
    publishers = [(await connect(server.url))[0] for _ in range(10)]
    acked: list[str] = []
    refused = 0

    async def publish_for(connection: Any, index: int, seconds: float) -> None:
        nonlocal refused
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        count = 0
        while loop.time() < deadline:
            content = f"p{index}-{count}"
            reply = await publish(connection, room, content, content)
            if reply["type"] == "ack":
                acked.append(content)
            else:
                assert reply["code"] == "unavailable" and "overloaded" in reply["message"], reply
                refused += 1
            count += 1
            await asyncio.sleep(0.01)

    for _ in range(3):
        assert server.metric("ws_event_loop_lag_seconds") < 0.05
        server.signal(signal.SIGSTOP)
        await asyncio.sleep(1.5)
        server.signal(signal.SIGCONT)
        shed_before = refused
        await asyncio.gather(
            *(publish_for(connection, index, 1.0) for index, connection in enumerate(publishers))
        )
        assert refused > shed_before, "publishes right after the stall were refused"
        await wait_until_async(
            lambda: server.metric("ws_event_loop_lag_seconds") < 0.05, "the lag to fall"
        )
        # Caught up: publishes are acked again.
        assert (await publish(publishers[0], room, "after", f"after-{refused}"))["type"] == "ack"
        acked.append("after")

    await assert_delivered_once_in_order(member, publishers[0], room, acked)
    assert server.metric("ws_publishes_shed_total") == refused
    for connection in (member, *publishers):
        await connection.close()
