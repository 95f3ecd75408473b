"""Probe TCP ports from inside a scenario container, many at once.

A port is "open" when a connection is accepted and the listener says something
(an HTTP status line, sshd's banner), "dropped" when the connection attempt
times out (the firewall's drop policy), "refused" when nothing listens.
"""

from __future__ import annotations

import json
import shlex

LB_PRIVATE = "172.30.241.10"
LB_PUBLIC = "198.51.100.10"
WS = "172.30.241.21"
REDIS = "172.30.241.31"
MON = "172.30.241.40"
# The hosts the firewall manages (the fifth container, wsfleet-fw-outside, is the world).
MANAGED = ["wsfleet-fw-lb", "wsfleet-fw-ws", "wsfleet-fw-redis", "wsfleet-fw-mon"]

PROBE = r"""
import concurrent.futures, json, socket, sys

def probe(target):
    address, port = target
    try:
        connection = socket.create_connection((address, port), timeout=3)
    except socket.timeout:
        return "dropped"
    except ConnectionRefusedError:
        return "refused"
    except OSError as error:
        return "error " + str(error)
    with connection:
        connection.settimeout(3)
        if port != 22:
            connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            first = connection.recv(64).split(b"\r\n")[0].decode(errors="replace")
        except OSError:
            first = ""
    return "open " + first if first else "silent"

targets = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    results = list(pool.map(probe, targets))
print(json.dumps({f"{address}:{port}": result for (address, port), result in zip(targets, results)}))
"""


def probe_from(machine, targets: list[tuple[str, int]]) -> dict[str, str]:
    """Probe every target from `machine` (a testinfra host) at once; {"address:port": result}."""
    argument = json.dumps([[address, port] for address, port in targets])
    output = machine.check_output(f"python3 -c {shlex.quote(PROBE)} {shlex.quote(argument)}")
    return json.loads(output)
