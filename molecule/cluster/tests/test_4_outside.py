"""From outside the private network only the load balancer's ports answer."""

from conftest import REDIS, WS_INSTANCES

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except OSError as error:
    print("closed", error)
"""


def reachable(host, address: str, port: int) -> bool:
    result = host.run(f"python3 -c '{PROBE}' {address} {port}")
    return result.stdout.startswith("open")


def test_only_the_load_balancer_answers_from_outside(machine):
    outside = machine("cluster-outside")
    lb_front = machine("cluster-lb1").check_output(
        "ip -4 -o addr show | awk '{print $4}' | cut -d/ -f1 | grep -v -e '^127\\.' -e '^172\\.30\\.233\\.'"
    )
    assert reachable(outside, lb_front, 80)
    assert reachable(outside, lb_front, 443)
    for address, ports in WS_INSTANCES.values():
        for port in ports:
            assert not reachable(outside, address, port), f"{address}:{port} answers from outside"
    _, redis_address, redis_port = REDIS
    assert not reachable(outside, redis_address, redis_port)


def test_inside_the_private_network_the_instances_do_answer(machine):
    """The same probe succeeds from the load balancer: the check above can fail."""
    lb = machine("cluster-lb1")
    for address, ports in WS_INSTANCES.values():
        for port in ports:
            assert reachable(lb, address, port)
