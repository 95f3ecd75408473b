"""HTTP endpoints on the WebSocket port: /health, /live, /metrics, /api/publish, 404."""

from __future__ import annotations

import json

from conftest import Launcher, ServerProcess, connect, join, publish, recv_type, unique_room

METRIC_NAMES = (
    "ws_connected_clients",
    "ws_messages_total",
    "ws_message_duration_seconds",
    "ws_fanout_latency_seconds",
    "ws_slow_consumer_disconnects_total",
    "ws_rejected_connections_total",
    "ws_redis_up",
    "ws_local_rooms",
    "ws_draining",
)


def test_health_and_live_answer_ok(cluster: list[ServerProcess]) -> None:
    status, body = cluster[0].json("/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["instance"] == f"test-{cluster[0].port}"
    assert body["redis"] == "up"
    assert cluster[0].json("/live") == (200, {"status": "alive"})


def test_unknown_paths_are_404(cluster: list[ServerProcess]) -> None:
    for path in ("/", "/nope", "/ws/extra", "/healthz"):
        assert cluster[0].http("GET", path)[0] == 404, path
    assert cluster[0].http("POST", "/nope", b"{}", {"Content-Type": "application/json"})[0] == 404


async def test_metrics_have_protocol_names_and_count_real_traffic(
    cluster: list[ServerProcess],
) -> None:
    server = cluster[2]
    _, headers, body = server.http("GET", "/metrics")
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in METRIC_NAMES:
        assert f"\n{name}" in text or f"# TYPE {name.removesuffix('_total')}" in text, name

    inbound_before = server.metric("ws_messages_total", 'direction="inbound",type="message"')
    outbound_before = server.metric("ws_messages_total", 'direction="outbound",type="message"')
    fanout_before = server.metric("ws_fanout_latency_seconds_count")
    duration_before = server.metric("ws_message_duration_seconds_count")
    welcome_before = server.metric("ws_messages_total", 'direction="outbound",type="welcome"')
    room = unique_room("metrics")
    connections = [(await connect(server.url))[0] for _ in range(3)]
    for connection in connections:
        await join(connection, room)
    assert server.metric("ws_connected_clients") >= 3
    assert server.metric("ws_local_rooms") >= 1
    publisher, _ = await connect(server.url)
    # (Welcomes are counted as a plain integer and added to the counter at each scrape.)
    assert (
        server.metric("ws_messages_total", 'direction="outbound",type="welcome"')
        == welcome_before + 4
    )
    assert server.metric("ws_connected_clients") >= 4
    for n in range(4):
        await publish(publisher, room, n, str(n))
    for connection in connections:
        for _ in range(4):
            await recv_type(connection, "message")
    assert (
        server.metric("ws_messages_total", 'direction="inbound",type="message"')
        == inbound_before + 4
    )
    assert (
        server.metric("ws_messages_total", 'direction="outbound",type="message"')
        == outbound_before + 12
    )
    assert server.metric("ws_fanout_latency_seconds_count") == fanout_before + 4
    assert server.metric("ws_message_duration_seconds_count") >= duration_before + 7
    assert server.metric("ws_redis_up") == 1
    assert server.metric("ws_draining") == 0
    for connection in [*connections, publisher]:
        await connection.close()


async def test_api_publish_delivers_with_from_api(cluster: list[ServerProcess]) -> None:
    room = unique_room("api")
    listener, _ = await connect(cluster[1].url)
    await join(listener, room)
    body = json.dumps({"room": room, "content": {"hello": "api"}}).encode()
    status, _, answer = cluster[0].http(
        "POST",
        "/api/publish",
        body,
        {"Authorization": "Bearer test-api-key", "Content-Type": "application/json"},
    )
    assert status == 200, answer
    offset = json.loads(answer)["offset"]
    message = await recv_type(listener, "message")
    assert message["from"] == "api"
    assert message["offset"] == offset
    assert message["content"] == {"hello": "api"}
    await listener.close()


def test_api_publish_refuses_bad_key_and_bad_body(cluster: list[ServerProcess]) -> None:
    server = cluster[0]
    body = json.dumps({"room": "r", "content": 1}).encode()
    assert server.http("POST", "/api/publish", body)[0] == 401
    assert server.http("POST", "/api/publish", body, {"Authorization": "Bearer wrong"})[0] == 401
    good = {"Authorization": "Bearer test-api-key"}
    status, _, answer = server.http("POST", "/api/publish", b"{not json", good)
    assert (status, json.loads(answer)["error"]) == (400, "bad_json")
    status, _, answer = server.http(
        "POST", "/api/publish", json.dumps({"room": "bad room!", "content": 1}).encode(), good
    )
    assert (status, json.loads(answer)["error"]) == (400, "bad_room")
    status, _, answer = server.http(
        "POST", "/api/publish", json.dumps({"room": "r"}).encode(), good
    )
    assert (status, json.loads(answer)["error"]) == (400, "bad_message")
    assert server.http("GET", "/api/publish", None, good)[0] == 405


def test_api_publish_is_404_without_a_configured_key(launch: Launcher) -> None:
    server = launch()
    body = json.dumps({"room": "r", "content": 1}).encode()
    assert server.http("POST", "/api/publish", body, {"Authorization": "Bearer x"})[0] == 404
