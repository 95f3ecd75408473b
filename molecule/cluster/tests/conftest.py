import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

LB_HTTP = "http://127.0.0.1:18080"
LB_WS = "ws://127.0.0.1:18080/ws"
LB_TLS = "127.0.0.1:18443"
WS_INSTANCES = {"cluster-ws1": ("172.30.233.21", [8000, 8001]), "cluster-ws2": ("172.30.233.22", [8000, 8001])}
REDIS = ("cluster-redis1", "172.30.233.31", 6379)


@pytest.fixture(scope="session")
def machine():
    """Testinfra hosts of the scenario by name: machine("cluster-lb1")."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    cache: dict[str, testinfra.host.Host] = {}

    def get(name: str) -> testinfra.host.Host:
        if name not in cache:
            cache[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        return cache[name]

    return get
