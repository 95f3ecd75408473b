#!/usr/bin/env python3
"""Smoke check of a deployed wsfleet, through its load balancer, from outside.

Proves the two things a horizontally scaled WebSocket service must do:
- affinity: a client that presents the cookie from its first response comes back
  to the same server (cookie mode), or one client address always reaches the same
  server (ip_hash mode);
- cross-server delivery: a message published on one server reaches a member of
  the room connected to another server, in the same order with the same offset.

Prints one JSON report and exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import sys
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException


class SmokeFailure(Exception):
    """The deployment does not do what it should; the message says what."""


@dataclass
class Landing:
    connection: ClientConnection
    server: str
    cookies: dict[str, str]


def ssl_context(url: str, insecure: bool) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    if insecure:  # the lab's self-signed certificate
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def land(url: str, args: argparse.Namespace, cookies: dict[str, str] | None = None) -> Landing:
    headers = {}
    if cookies:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    connection = await connect(url, additional_headers=headers, ssl=ssl_context(url, args.insecure), open_timeout=10)
    welcome = json.loads(await asyncio.wait_for(connection.recv(), 10))
    if welcome.get("type") != "welcome":
        raise SmokeFailure(f"expected a welcome frame, got {welcome}")
    received: dict[str, str] = {}
    for header in connection.response.headers.get_all("Set-Cookie") if connection.response else []:
        parsed = SimpleCookie()
        parsed.load(header)
        received.update({name: morsel.value for name, morsel in parsed.items()})
    return Landing(connection, welcome["server"], received)


async def expect(connection: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(connection.recv(), 10))
        if frame.get("type") == kind:
            return frame
        if frame.get("type") == "error":
            raise SmokeFailure(f"server answered an error: {frame}")


async def check_affinity(args: argparse.Namespace, report: dict[str, Any]) -> None:
    first = await land(args.url, args)
    await first.connection.close()
    if args.affinity == "cookie":
        if not first.cookies:
            raise SmokeFailure("cookie affinity: the first response set no cookie")
        servers = []
        for _ in range(args.repeat):
            again = await land(args.url, args, first.cookies)
            servers.append(again.server)
            await again.connection.close()
        if set(servers) != {first.server}:
            raise SmokeFailure(f"cookie affinity: pinned to {first.server}, but landed on {servers}")
        report["affinity"] = {"mode": "cookie", "cookie": sorted(first.cookies), "server": first.server, "repeats": len(servers)}
    elif args.affinity == "ip_hash":
        servers = []
        for _ in range(args.repeat):
            again = await land(args.url, args)
            servers.append(again.server)
            await again.connection.close()
        if set(servers) != {first.server}:
            raise SmokeFailure(f"ip_hash affinity: one client address reached {sorted(set(servers) | {first.server})}")
        report["affinity"] = {"mode": "ip_hash", "server": first.server, "repeats": len(servers)}
    else:
        report["affinity"] = {"mode": args.affinity, "checked": False}


async def check_cross_server_delivery(args: argparse.Namespace, report: dict[str, Any]) -> None:
    landings: list[Landing] = []
    try:
        for _ in range(args.attempts):
            landing = await land(args.url, args)
            landings.append(landing)
            if len({item.server for item in landings}) >= 2:
                break
        by_server = {item.server: item for item in landings}
        if len(by_server) < 2:
            if args.affinity == "ip_hash":
                report["cross_server"] = {"checked": False, "why": "ip_hash sends one client address to one server"}
                return
            raise SmokeFailure(f"{len(landings)} connections all landed on {sorted(by_server)}: no spread across servers")
        listener, publisher = list(by_server.values())[:2]
        room = "smoke-" + secrets.token_hex(4)
        for member in (listener, publisher):
            await member.connection.send(json.dumps({"type": "join", "room": room}))
            await expect(member.connection, "joined")
        await publisher.connection.send(
            json.dumps({"type": "message", "room": room, "content": {"smoke": True}, "id": "smoke-1"})
        )
        ack = await expect(publisher.connection, "ack")
        delivered = await expect(listener.connection, "message")
        if delivered["offset"] != ack["offset"] or delivered["content"] != {"smoke": True}:
            raise SmokeFailure(f"cross-server delivery: acked {ack}, delivered {delivered}")
        report["cross_server"] = {"from": publisher.server, "to": listener.server, "room": room, "offset": ack["offset"]}
    finally:
        for landing in landings:
            await landing.connection.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="WebSocket URL through the load balancer, e.g. ws://127.0.0.1:8080/ws")
    parser.add_argument("--affinity", default="cookie", choices=["cookie", "ip_hash", "least_conn", "round_robin"])
    parser.add_argument("--attempts", type=int, default=20, help="connections to try before giving up on a spread")
    parser.add_argument("--repeat", type=int, default=5, help="reconnections that must keep their server")
    parser.add_argument("--insecure", action="store_true", help="accept a self-signed certificate (lab)")
    args = parser.parse_args()
    report: dict[str, Any] = {"url": args.url}
    try:
        await check_affinity(args, report)
        await check_cross_server_delivery(args, report)
    except (SmokeFailure, WebSocketException, OSError, TimeoutError) as failure:
        report["failure"] = f"{type(failure).__name__}: {failure}"
        print(json.dumps(report))
        return 1
    report["ok"] = True
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
