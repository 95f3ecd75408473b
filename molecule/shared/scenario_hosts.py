"""The `machine` fixture every multi-host scenario's tests use: testinfra hosts by
inventory name, over the connection Molecule's inventory gives each host (SSH as
`deploy` with sudo where the scenario sets it, `docker exec` otherwise).

A scenario's conftest.py imports it (`from scenario_hosts import machine`) after
putting molecule/shared on sys.path.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import testinfra


@pytest.fixture(scope="session")
def machine() -> Callable[[str], testinfra.host.Host]:
    """Testinfra hosts of the scenario by name: machine("cluster-lb1")."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    cache: dict[str, testinfra.host.Host] = {}

    def get(name: str) -> testinfra.host.Host:
        if name not in cache:
            cache[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        return cache[name]

    return get
