"""Issue 15, item 1: a host whose default route is public, and which has no
wsfleet_private_address, must stop every role before it does anything, with an
error naming wsfleet_private_address; never bind to, or be dialled at, the
public address.

wsfleet-fw-lb is that host: its default route goes through the "internet"
network (198.51.100.10) and it also has a private address (172.30.241.10) that
nothing tells the roles about. The roles run in check mode, so that a role that
wrongly carries on changes nothing here.
"""

from __future__ import annotations

import pytest
from role_run import apply_role_in_check_mode

PUBLIC_DEFAULT = "198.51.100.10"
# What each role needs to get past its own argument checks (the secrets are the
# lab's kind: throw-away, for this container only).
INVENTORY = """
all:
  hosts:
    wsfleet-fw-lb:
      ansible_connection: community.docker.docker
  vars:
    ws_server_redis_password: firewall-scenario-password
    redis_pubsub_wsfleet_password: firewall-scenario-wsfleet
    redis_pubsub_admin_password: firewall-scenario-admin-pw
"""


@pytest.mark.parametrize("role", ["ws_server", "redis_pubsub", "nginx_lb", "firewall"])
def test_a_public_default_route_stops_the_role_naming_the_variable(role, tmp_path):
    inventory = tmp_path / "public-default-route.yml"
    inventory.write_text(INVENTORY)
    returncode, output = apply_role_in_check_mode(role, inventory)
    assert returncode != 0, output[-3000:]
    assert f"default IPv4 address {PUBLIC_DEFAULT} is not private" in output, output[-3000:]
    assert "Set wsfleet_private_address for this host" in output
    # Stopped before the role itself ran a single task.
    assert f"TASK [{role} :" not in output, output[-3000:]
