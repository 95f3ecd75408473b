"""Who reaches what, probed from inside the containers: only the firewall decides,
since every stand-in listener is bound to all interfaces. Each "blocked" assertion
fails without the firewall; each "allowed" one fails if it blocks too much."""

from __future__ import annotations

import pytest
from reachability import LB_PRIVATE, LB_PUBLIC, MON, REDIS, WS, probe_from

# (source container, target address, port, allowed?)
EXPECTATIONS = {
    "wsfleet-fw-outside": [
        (LB_PUBLIC, 80, True),
        (LB_PUBLIC, 443, True),
        (LB_PUBLIC, 22, False),  # SSH only from wsfleet_admin_sources (the private network here)
        (LB_PUBLIC, 9100, False),
        (LB_PUBLIC, 9113, False),
    ],
    # A host inside the private network that is not a load balancer.
    "wsfleet-fw-redis": [
        (WS, 8000, False),
        (WS, 8001, False),
        (WS, 9100, False),
        (LB_PRIVATE, 80, True),
        (LB_PRIVATE, 443, True),
        (LB_PRIVATE, 22, True),
        (LB_PRIVATE, 9113, False),
        (MON, 9090, True),  # Prometheus: wsfleet_admin_sources by default
    ],
    "wsfleet-fw-lb": [
        (WS, 8000, True),
        (WS, 8001, True),
        (WS, 9100, False),
        (REDIS, 6379, False),
        (REDIS, 6380, False),
        (REDIS, 16379, False),
        (REDIS, 9121, False),
        (REDIS, 9100, False),
    ],
    "wsfleet-fw-ws": [
        (REDIS, 6379, True),
        (REDIS, 6380, True),
        (REDIS, 16379, False),  # the cluster bus: Redis peers only
        (REDIS, 16380, False),
        (REDIS, 9121, False),
        (LB_PRIVATE, 9113, False),
        (MON, 9100, False),
    ],
    "wsfleet-fw-mon": [
        (WS, 8000, True),
        (WS, 8001, True),
        (WS, 9100, True),
        (LB_PRIVATE, 9100, True),
        (LB_PRIVATE, 9113, True),
        (REDIS, 6379, True),
        (REDIS, 6380, True),
        (REDIS, 9121, True),
        (REDIS, 9122, True),
        (REDIS, 9100, True),
        (REDIS, 16379, False),
    ],
}


@pytest.fixture(scope="module")
def observed(machine) -> dict[str, dict[str, str]]:
    return {
        source: probe_from(machine(source), [(address, port) for address, port, _ in expectations])
        for source, expectations in EXPECTATIONS.items()
    }


@pytest.mark.parametrize("source", sorted(EXPECTATIONS))
def test_only_the_intended_flows_get_through(observed, source):
    wrong = []
    for address, port, allowed in EXPECTATIONS[source]:
        result = observed[source][f"{address}:{port}"]
        # Blocked means dropped by the policy: "refused" would only say nothing listens.
        if (allowed and not result.startswith("open ")) or (not allowed and result != "dropped"):
            wrong.append(f"{address}:{port} {'should answer' if allowed else 'should be dropped'}, got {result!r}")
    assert not wrong, f"from {source}: " + "; ".join(wrong)


def test_allowed_flows_reach_the_real_listener(observed):
    # The stand-ins are HTTP servers; sshd greets with its banner.
    assert observed["wsfleet-fw-outside"][f"{LB_PUBLIC}:80"].startswith("open HTTP/1.0 200")
    assert observed["wsfleet-fw-lb"][f"{WS}:8001"].startswith("open HTTP/1.0 200")
    assert observed["wsfleet-fw-redis"][f"{LB_PRIVATE}:22"].startswith("open SSH-2.0-")
