"""Redis stopped and restarted: ``unavailable`` during the outage, /health 503 then
200, and delivery resumes on the same client connections."""

from __future__ import annotations

import json

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


async def test_outage_answers_unavailable_then_delivery_resumes(
    launch: Launcher, own_redis: RedisProcess
) -> None:
    redis = own_redis
    first = launch("--api-key", "k", redis=redis)
    second = launch(redis=redis)
    room = unique_room("outage")
    listener, _ = await connect(first.url)
    await join(listener, room)
    publisher, _ = await connect(second.url)
    assert (await publish(publisher, room, "before", "1"))["type"] == "ack"
    assert (await recv_type(listener, "message"))["content"] == "before"

    redis.stop()
    for server in (first, second):
        wait_until(
            lambda s=server: (
                s.json("/health") == (503, {**s.json("/health")[1], "status": "degraded"})
            ),
            "health 503 degraded",
        )
        assert server.json("/health")[1]["redis"] == "down"
        assert server.metric("ws_redis_up") == 0
    answer = await publish(publisher, room, "lost?", "2")
    assert (answer["type"], answer["code"], answer["id"], answer["room"]) == (
        "error",
        "unavailable",
        "2",
        room,
    )
    status, _, body = first.http(
        "POST",
        "/api/publish",
        json.dumps({"room": room, "content": 1}).encode(),
        {"Authorization": "Bearer k"},
    )
    assert (status, json.loads(body)["error"]) == (503, "unavailable")

    redis.start()  # same port, empty: a new life for every room
    for server in (first, second):
        server.wait_healthy()
        assert server.metric("ws_redis_up") == 1
    assert (await publish(publisher, room, "after", "3"))["type"] == "ack"
    resumed = await recv_type(listener, "message")
    assert resumed["content"] == "after"
    # The same connections carried on: nobody reconnected.
    assert listener.close_code is None and publisher.close_code is None
    await listener.close()
    await publisher.close()
