"""A WebSocket client for the tests: it talks to a load balancer container from
the controller, over the scenario's private network, the way a browser would.

It uses websockets' asyncio client on an event loop of its own thread, behind
plain functions, so that a test can hold connections open while it runs a
playbook. (The threaded sync client shares one TLS connection between a reader
and a writer thread; against nginx 1.22 with TLS 1.3 that occasionally loses
the handshake request.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import threading
from dataclasses import dataclass
from http.cookies import SimpleCookie

import testinfra
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

HOSTS = ["nginx-lb-debian12", "nginx-lb-sid"]
COOKIE = "wsfleet_lb"
BACKEND_PORTS = [8101, 8102, 8103]
CERTIFICATE = "/etc/nginx/wsfleet-tls/self-signed.crt"


def get_host(name: str):
    """A testinfra host for an instance of the scenario, by inventory name."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


_ADDRESSES: dict[str, str] = {}
_CERTIFICATES: dict[str, str] = {}


def address(host) -> str:
    """The container's address on the scenario's network (its default route)."""
    name = host.backend.get_hostname()
    if name not in _ADDRESSES:
        route = host.check_output("ip -4 -o route get 1.1.1.1")
        _ADDRESSES[name] = re.search(r"\bsrc (\S+)", route).group(1)
    return _ADDRESSES[name]


def all_backends() -> set[str]:
    """Every backend id ("hostname:port") the load balancers should reach."""
    return {f"{name}:{port}" for name in HOSTS for port in BACKEND_PORTS}


def tls_context(host) -> ssl.SSLContext:
    """Trust the host's self-signed certificate, and check that it names the address."""
    name = host.backend.get_hostname()
    if name not in _CERTIFICATES:
        _CERTIFICATES[name] = host.file(CERTIFICATE).content_string
    return ssl.create_default_context(cadata=_CERTIFICATES[name])


def url(host, scheme: str = "wss", path: str = "/ws") -> str:
    return f"{scheme}://{address(host)}{path}"


@dataclass
class Visit:
    """What one WebSocket connection through the load balancer saw."""

    server: str
    status: int
    headers: dict[str, str]
    cookie: str | None  # the affinity cookie the load balancer set, if any


class _EventLoop:
    """An asyncio event loop running in a daemon thread for the whole test session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="lbclient", daemon=True).start()

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


_LOOP = _EventLoop()


class Connection:
    """One open WebSocket, used from the test's thread."""

    def __init__(self, websocket: ClientConnection) -> None:
        self._websocket = websocket
        self.response = websocket.response

    def recv(self, timeout: float = 10) -> str:
        return _LOOP.run(asyncio.wait_for(self._websocket.recv(), timeout))

    def send(self, text: str) -> None:
        _LOOP.run(self._websocket.send(text))

    def close(self) -> None:
        _LOOP.run(self._websocket.close())

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def open_ws(host, cookie: str | None = None, scheme: str = "wss", headers: dict[str, str] | None = None) -> Connection:
    headers = {**(headers or {}), **({"Cookie": f"{COOKIE}={cookie}"} if cookie else {})}
    context = tls_context(host) if scheme == "wss" else None

    async def opening() -> ClientConnection:
        return await ws_connect(
            url(host, scheme), additional_headers=headers, ssl=context, open_timeout=10, close_timeout=2, proxy=None
        )

    return Connection(_LOOP.run(opening()))


def welcome(connection: Connection) -> dict:
    message = json.loads(connection.recv())
    assert message["type"] == "welcome", message
    return message


def echoes(connection: Connection, text: str = "hello") -> bool:
    connection.send(text)
    return connection.recv() == text


def visit(host, cookie: str | None = None, scheme: str = "wss") -> Visit:
    """Connect, read the welcome, check the echo, close."""
    with open_ws(host, cookie, scheme) as connection:
        hello = welcome(connection)
        assert echoes(connection, f"echo via {hello['server']}")
        jar = SimpleCookie()
        for value in connection.response.headers.get_all("Set-Cookie"):
            jar.load(value)
        pinned = jar[COOKIE].value if COOKIE in jar else None
        return Visit(hello["server"], connection.response.status_code, hello["headers"], pinned)


def servers_reached(host, count: int, cookie: str | None = None) -> list[str]:
    return [visit(host, cookie).server for _ in range(count)]


def master_pid(host) -> str:
    return host.file("/run/nginx.pid").content_string.strip()


def nginx_config(host) -> str:
    return host.check_output("nginx -T 2>/dev/null")
