"""Staging and production inventories give every host a private address that
the private_address rule accepts (issue 15, item 1): read the way Ansible reads
them, with ansible-inventory."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "roles/private_address/filter_plugins/wsfleet_private_address.py"
spec = importlib.util.spec_from_file_location("wsfleet_private_address", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


@pytest.mark.parametrize("inventory", ["staging", "production"])
def test_every_host_has_a_private_address_of_its_own(inventory):
    listing = subprocess.run(
        ["ansible-inventory", "-i", str(ROOT / "inventories" / inventory), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    hostvars = json.loads(listing.stdout)["_meta"]["hostvars"]
    assert hostvars, "no hosts"
    addresses = {name: plugin.wsfleet_private_address(variables, name) for name, variables in hostvars.items()}
    assert len(set(addresses.values())) == len(addresses), addresses
