#!/usr/bin/python3
"""A stand-in WebSocket backend for the nginx_lb scenario.

On connect it sends {"type": "welcome", "server": ID, "headers": {...}} (the
request headers it received, so a test can see what the load balancer
forwarded), then echoes every message. GET /health answers 200. It runs on
Debian 12's python3-websockets 10.4 (legacy API) and on newer releases (the
asyncio API of websockets >= 13), so it picks the API that is there.

Usage: wsfleet-test-backend PORT   (listens on 0.0.0.0:PORT, id HOSTNAME:PORT)
"""

import asyncio
import json
import socket
import sys
from http import HTTPStatus

try:
    from websockets.asyncio.server import serve

    MODERN = True
except ImportError:  # websockets < 13
    from websockets.server import serve

    MODERN = False

PORT = int(sys.argv[1])
SERVER_ID = f"{socket.gethostname()}:{PORT}"


def request_headers(websocket) -> dict:
    headers = websocket.request.headers if MODERN else websocket.request_headers
    return {name.lower(): value for name, value in headers.raw_items()}


async def handler(websocket, *_legacy_path) -> None:
    welcome = {"type": "welcome", "server": SERVER_ID, "headers": request_headers(websocket)}
    await websocket.send(json.dumps(welcome))
    async for message in websocket:
        await websocket.send(message)


if MODERN:

    def process_request(connection, request):
        if request.path == "/health":
            return connection.respond(HTTPStatus.OK, f"ok {SERVER_ID}\n")
        return None

else:

    async def process_request(path, _headers):
        if path == "/health":
            return HTTPStatus.OK, [], f"ok {SERVER_ID}\n".encode()
        return None


async def main() -> None:
    async with serve(handler, "0.0.0.0", PORT, process_request=process_request, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
