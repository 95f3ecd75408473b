"""Stopping an instance makes WsfleetInstanceDown fire (its `for:` is 10 s here)."""

from __future__ import annotations

import time

from prometheus import WS_HOST, api, wait_for


def firing(instance: str) -> list[dict]:
    return [
        alert
        for alert in api("alerts")["alerts"]
        if alert["labels"]["alertname"] == "WsfleetInstanceDown"
        and alert["labels"]["instance"] == instance
        and alert["state"] == "firing"
    ]


def test_stopping_an_instance_fires_its_down_alert(machine, scraped) -> None:
    name, address, ports = WS_HOST
    instance = f"{address}:{ports[1]}"
    host = machine(name)
    assert not firing(instance)
    host.check_output(f"systemctl stop wsfleet@{ports[1]}.service")
    stopped = time.monotonic()
    try:
        alerts = wait_for(lambda: firing(instance), 60, f"WsfleetInstanceDown firing for {instance}")
        elapsed = time.monotonic() - stopped
        print(f"WsfleetInstanceDown fired {elapsed:.1f} s after the stop")
        assert alerts[0]["labels"]["severity"] == "page"
        # The other instance stays quiet.
        assert not firing(f"{address}:{ports[0]}")
    finally:
        host.check_output(f"systemctl start wsfleet@{ports[1]}.service")
    wait_for(lambda: not firing(instance), 60, f"WsfleetInstanceDown resolved for {instance}")
