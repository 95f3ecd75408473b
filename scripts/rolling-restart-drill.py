#!/usr/bin/env python3
"""rolling-restart-drill.py: time playbooks/rolling-restart.yml under live traffic.

Connects LISTENERS resuming clients and one publisher to a room through the load
balancer, publishes RATE messages per second, runs the rolling restart, and
reports how long it took and whether every listener ended with every
acknowledged message once and in order. Run it against the lab (the default) or
any fleet of yours, with the project's virtualenv:

    .venv/bin/python scripts/rolling-restart-drill.py --listeners 200 --rate 50
    .venv/bin/python scripts/rolling-restart-drill.py -- -e wsfleet_rolling_step=host

Arguments after `--` go to ansible-playbook. Exit status 0 when the restart
succeeded and no listener lost, repeated or reordered an acknowledged message.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from wsfleet.client import Client, Message, PublishError
from wsfleet.protocol import offset_key

ROOT = Path(__file__).resolve().parent.parent


async def collect(client: Client, room: str, received: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            item = await client.next_message(timeout=1)
        except TimeoutError:
            continue
        if isinstance(item, Message) and item.room == room:
            received.append(item.offset)


async def publish_steadily(
    publisher: Client, room: str, rate: float, acked: list[str], refused: list[str], stop: asyncio.Event
) -> None:
    interval = 1 / rate
    next_at = time.monotonic()
    sequence = 0
    while not stop.is_set():
        sequence += 1
        try:
            acked.append(await publisher.publish(room, {"n": sequence}, timeout=10))
        except (PublishError, TimeoutError, ConnectionClosed) as error:
            refused.append(f"{sequence}: {error!r}")  # not acknowledged: not owed to anyone
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def run_playbook(inventory: str, extra: list[str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "ansible-playbook",
        "-i",
        inventory,
        str(ROOT / "playbooks" / "rolling-restart.yml"),
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode(errors="replace")


def listen(url: str, room: str, count: int, ready: Any, stop: Any, out: Any) -> None:
    """One listener process: COUNT resuming clients; their offsets once told to stop."""

    async def run() -> list[list[str]]:
        clients = [Client(url, rooms=[room]) for _ in range(count)]
        for client in clients:
            await client.__aenter__()
        await asyncio.gather(*(client.wait_connected(timeout=60) for client in clients))
        received: list[list[str]] = [[] for _ in clients]
        done = asyncio.Event()
        collectors = [
            asyncio.create_task(collect(client, room, offsets, done)) for client, offsets in zip(clients, received, strict=True)
        ]
        ready.set()
        await asyncio.to_thread(stop.wait)
        done.set()
        await asyncio.gather(*collectors)
        for client in clients:
            await client.close()
        return received

    out.put(asyncio.run(run()))


async def drill(options: argparse.Namespace) -> int:
    room = options.room
    # Listeners in several processes: one Python process cannot read 200 x 50
    # messages per second by itself, and a listener that falls behind would be
    # closed as a slow consumer, which is not what this drill measures.
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    out = context.Queue()
    shares = [len(range(n, options.listeners, options.processes)) for n in range(options.processes)]
    readies = [context.Event() for _ in shares]
    workers = [
        context.Process(target=listen, args=(options.url, room, share, ready, stop, out))
        for share, ready in zip(shares, readies, strict=True)
        if share
    ]
    for worker in workers:
        worker.start()
    for ready in readies[: len(workers)]:
        await asyncio.to_thread(ready.wait, 120)
    publisher = Client(options.url)
    await publisher.__aenter__()
    await publisher.wait_connected(timeout=60)
    acked: list[str] = []
    refused: list[str] = []
    stop_publishing = asyncio.Event()
    publishing = asyncio.create_task(publish_steadily(publisher, room, options.rate, acked, refused, stop_publishing))
    await asyncio.sleep(2)
    print(f"{options.listeners} listeners, {options.rate:g} msg/s: running rolling-restart.yml", file=sys.stderr)
    started = time.monotonic()
    returncode, output = await run_playbook(options.inventory, options.ansible_args)
    seconds = time.monotonic() - started
    await asyncio.sleep(2)
    stop_publishing.set()
    await publishing
    await publisher.close()
    await asyncio.sleep(options.settle)  # the last messages reach every listener
    stop.set()
    received: list[list[str]] = []
    for _ in workers:
        received.extend(await asyncio.to_thread(out.get, True, 120))
    for worker in workers:
        worker.join(30)

    acked_set = set(acked)
    lost = duplicated = disordered = 0
    for offsets in received:
        mine = [offset for offset in offsets if offset in acked_set]
        unique = list(dict.fromkeys(mine))
        lost += len(acked_set - set(unique))
        duplicated += len(mine) - len(unique)
        disordered += unique != sorted(unique, key=offset_key)
    recap = [line for line in output.splitlines() if " : ok=" in line]
    print("\n".join(recap), file=sys.stderr)
    if "TASKS RECAP" in output:  # profile_tasks (ansible.cfg): where the time went
        print(output[output.index("TASKS RECAP") :], file=sys.stderr)
    print(
        f"rolling restart: exit {returncode}, {seconds:.1f} s; {len(acked)} messages acknowledged, "
        f"{len(refused)} refused while instances moved; over {len(received)} listeners: "
        f"{lost} lost, {duplicated} duplicated, {disordered} listeners out of order"
    )
    if returncode != 0:
        print(output[-4000:], file=sys.stderr)
    return 0 if returncode == 0 and lost == duplicated == disordered == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the load balancer's WebSocket URL")
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "lab"))
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--room", default="rolling-restart-drill")
    parser.add_argument("--processes", type=int, default=4, help="listener processes")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds the listeners get to catch up")
    parser.add_argument("ansible_args", nargs="*", help="after --: arguments for ansible-playbook")
    return asyncio.run(drill(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
