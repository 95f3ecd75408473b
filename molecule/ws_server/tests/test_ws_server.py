"""Verify the deployed server instances from inside each container."""

from __future__ import annotations

import json
import re
import textwrap

PORTS = [8000, 8001]
NOFILE = 9000 * 2 + 1024
PYTHON = "/opt/wsfleet/current/bin/python"
# systemd-analyze security: 0 is fully locked down, 10 is wide open; "OK" ends at 3.9.
EXPOSURE_BOUND = 3.0


def bind_address(host) -> str:
    config = host.file("/etc/wsfleet/8000.toml").content_string
    match = re.search(r'^host = "([^"]+)"', config, re.MULTILINE)
    assert match, config
    return match.group(1)


def run_python(host, script: str, timeout: int = 60) -> dict:
    """Run a script with the release's own Python; it prints one JSON object."""
    result = host.run(f"timeout {timeout} {PYTHON} - <<'EOF'\n{textwrap.dedent(script)}\nEOF")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_instance_is_active_and_healthy(host):
    address = bind_address(host)
    assert not address.startswith("127."), "instances must listen on the private address"
    for port in PORTS:
        assert host.service(f"wsfleet@{port}").is_running
        assert host.service(f"wsfleet@{port}").is_enabled
        status = run_python(
            host,
            f"""
            import json, urllib.request
            with urllib.request.urlopen("http://{address}:{port}/health", timeout=5) as answer:
                print(json.dumps({{"code": answer.status, "body": json.load(answer)}}))
            """,
        )
        assert status["code"] == 200
        assert status["body"]["status"] == "ok"


def test_instances_listen_on_the_private_address_only(host):
    address = bind_address(host)
    listening = host.check_output("ss -Htln").splitlines()
    for port in PORTS:
        local = [line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")]
        assert local == [f"{address}:{port}"]


def test_the_open_file_limit_reached_each_instance(host):
    for port in PORTS:
        pid = host.check_output(f"systemctl show -p MainPID --value wsfleet@{port}")
        limits = host.file(f"/proc/{pid}/limits").content_string
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(NOFILE), str(NOFILE)]


def test_a_message_crosses_instances_through_redis(host):
    address = bind_address(host)
    outcome = run_python(
        host,
        f"""
        import asyncio, json
        from websockets.asyncio.client import connect

        async def main():
            async with connect("ws://{address}:8000/ws") as listener, connect("ws://{address}:8001/ws") as sender:
                welcome_listener = json.loads(await listener.recv())
                welcome_sender = json.loads(await sender.recv())
                await listener.send(json.dumps({{"type": "join", "room": "cross"}}))
                assert json.loads(await listener.recv())["type"] == "joined"
                await sender.send(json.dumps({{"type": "message", "room": "cross", "content": "hello", "id": "m1"}}))
                ack = json.loads(await asyncio.wait_for(sender.recv(), 10))
                received = json.loads(await asyncio.wait_for(listener.recv(), 10))
                print(json.dumps({{"servers": [welcome_listener["server"], welcome_sender["server"]],
                                   "ack": ack, "received": received}}))

        asyncio.run(main())
        """,
    )
    assert outcome["servers"][0] != outcome["servers"][1]
    assert outcome["ack"]["type"] == "ack"
    assert outcome["received"]["type"] == "message"
    assert outcome["received"]["content"] == "hello"
    assert outcome["received"]["offset"] == outcome["ack"]["offset"]


def test_stopping_an_instance_drains_its_clients(host):
    address = bind_address(host)
    timeout_stop = int(host.check_output("systemctl show -p TimeoutStopUSec --value wsfleet@8001").rstrip("s"))
    try:
        outcome = run_python(
            host,
            f"""
            import asyncio, json, subprocess, time
            from websockets.asyncio.client import connect
            from websockets.exceptions import ConnectionClosed

            async def main():
                async with connect("ws://{address}:8001/ws") as client:
                    await client.recv()  # welcome
                    started = time.monotonic()
                    stopping = asyncio.create_task(asyncio.to_thread(
                        subprocess.run, ["systemctl", "stop", "wsfleet@8001"], check=True))
                    frames = []
                    try:
                        while True:
                            frames.append(json.loads(await asyncio.wait_for(client.recv(), 30)))
                    except ConnectionClosed:
                        pass
                    await stopping
                    print(json.dumps({{"frames": frames, "close": client.close_code,
                                       "stop_seconds": time.monotonic() - started}}))

            asyncio.run(main())
            """,
        )
    finally:
        host.run("systemctl start wsfleet@8001")
    assert outcome["frames"][-1]["type"] == "server-shutdown"
    assert 0 <= outcome["frames"][-1]["reconnectAfter"] <= 1000  # drain spread of 1 s
    assert outcome["close"] == 1012
    assert outcome["stop_seconds"] < timeout_stop
    assert host.service("wsfleet@8001").is_running


def test_the_unit_is_sandboxed(host):
    report = host.check_output("systemd-analyze security --no-pager wsfleet@8000.service")
    match = re.search(r"Overall exposure level for wsfleet@8000.service: ([0-9.]+)", report)
    assert match, report
    assert float(match.group(1)) <= EXPOSURE_BOUND, report


def test_secrets_are_readable_by_the_service_only(host):
    secret = host.file("/etc/wsfleet/secrets/redis_password")
    assert secret.mode == 0o640
    assert secret.user == "root"
    assert secret.group == "wsfleet"
    assert "molecule-wsfleet-password" not in host.file("/etc/wsfleet/8000.toml").content_string
