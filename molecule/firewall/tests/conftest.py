import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def machine():
    """Testinfra hosts of the scenario by name: machine("wsfleet-fw-lb")."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    cache: dict[str, testinfra.host.Host] = {}

    def get(name: str) -> testinfra.host.Host:
        if name not in cache:
            cache[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        return cache[name]

    return get
