"""Under a steady stream of messages, rolling-restart.yml restarts every instance,
and every resuming client ends with every acknowledged message, in order, once."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from conftest import LB_WS
from playbook_run import ANSI_ESCAPE
from websockets.exceptions import ConnectionClosed
from wsfleet.client import Client, Message, PublishError
from wsfleet.protocol import offset_key

LISTENERS = 6
PUBLISH_INTERVAL = 0.05  # 20 messages per second
ROOM = "rolling-restart"


async def collect(client: Client, received: list[str], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            item = await client.next_message(timeout=1)
        except TimeoutError:
            continue
        if isinstance(item, Message) and item.room == ROOM:
            received.append(item.offset)


async def publish_steadily(publisher: Client, acked: list[str], failures: list[str], stop: asyncio.Event) -> None:
    sequence = 0
    while not stop.is_set():
        sequence += 1
        try:
            acked.append(await publisher.publish(ROOM, {"n": sequence}, timeout=10))
        except (PublishError, TimeoutError, ConnectionClosed) as error:
            # Not acknowledged: not stored, or (timeout) perhaps stored. Either way
            # it is not in the set every listener must end with.
            failures.append(f"{sequence}: {error!r}")
        await asyncio.sleep(PUBLISH_INTERVAL)


async def rolling_restart() -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "ansible-playbook",
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "../../playbooks/rolling-restart.yml"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )
    output, _ = await process.communicate()
    return process.returncode or 0, ANSI_ESCAPE.sub("", output.decode())


async def scenario() -> dict:
    stop_publishing, stop_collecting = asyncio.Event(), asyncio.Event()
    listeners = [Client(LB_WS, rooms=[ROOM]) for _ in range(LISTENERS)]
    publisher = Client(LB_WS)
    received: list[list[str]] = [[] for _ in listeners]
    acked: list[str] = []
    failures: list[str] = []
    for client in [*listeners, publisher]:
        await client.__aenter__()
        await client.wait_connected(timeout=30)
    collectors = [asyncio.create_task(collect(c, r, stop_collecting)) for c, r in zip(listeners, received, strict=True)]
    await asyncio.sleep(1)  # every listener has joined before the stream starts
    publishing = asyncio.create_task(publish_steadily(publisher, acked, failures, stop_publishing))
    started = time.monotonic()
    returncode, output = await rolling_restart()
    restart_seconds = time.monotonic() - started
    await asyncio.sleep(2)  # a little more traffic after the last instance came back
    stop_publishing.set()
    await publishing
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(set(acked) - set(r) for r in received):
        await asyncio.sleep(0.2)
    stop_collecting.set()
    await asyncio.gather(*collectors)
    for client in [*listeners, publisher]:
        await client.close()
    return {
        "returncode": returncode,
        "output": output,
        "restart_seconds": restart_seconds,
        "acked": acked,
        "received": received,
        "failures": failures,
    }


def test_rolling_restart_under_load_loses_nothing():
    outcome = asyncio.run(scenario())
    assert outcome["returncode"] == 0, outcome["output"]
    # One step per instance (the default wsfleet_rolling_step): drain, restart,
    # health, and back on the load balancers with the next step's drain.
    assert outcome["output"].count("TASK [Restart this step's instances together") == 4, outcome["output"]
    acked = outcome["acked"]
    assert len(acked) > 100, f"the stream was too thin to prove anything: {len(acked)} messages"
    in_order = sorted(acked, key=offset_key)
    for index, offsets in enumerate(outcome["received"]):
        room_offsets = [offset for offset in offsets if offset in set(acked)]
        assert len(room_offsets) == len(set(room_offsets)), f"listener {index} got duplicates"
        missing = len(set(acked) - set(room_offsets))
        ordered = room_offsets == sorted(room_offsets, key=offset_key)
        assert room_offsets == in_order, f"listener {index}: {missing} missing, offsets in order: {ordered}"
    print(
        f"{len(acked)} acked messages, {len(outcome['failures'])} refused publishes, "
        f"restart took {outcome['restart_seconds']:.0f} s",
        file=sys.stderr,
    )
