"""Apply one role in check mode to scenario containers, with an inventory of the test's own.

The scenario's inventory is left out on purpose: a test that needs a host
without its wsfleet_private_address, or in another group, writes the inventory
it needs (tests/test_private_address_fails_closed.py, test_operations.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def apply_role_in_check_mode(role: str, inventory: Path) -> tuple[int, str]:
    """Run the scenario's apply_role.yml for `role` in check mode; (return code, output)."""
    playbook = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "apply_role.yml"
    command = ["ansible-playbook", "-i", str(inventory), str(playbook), "--check", "-e", f"fw_role={role}"]
    environment = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, env=environment)
    return completed.returncode, ANSI_ESCAPE.sub("", completed.stdout + completed.stderr)
