"""Run ansible-playbook from a testinfra test against the scenario's own instances.

Some properties of a role are about Ansible itself, not the host: "check mode
reports no change", "a wrong-typed variable fails with the argument-spec
message". Molecule exports its inventory and configuration to the verifier, so a
test can run a playbook the way an operator would and read the recap.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


@dataclass
class PlaybookResult:
    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """Per host counts from the PLAY RECAP."""
        counts: dict[str, dict[str, int]] = {}
        for line in self.output.splitlines():
            match = RECAP_LINE.match(line.strip())
            if match:
                fields = match.groupdict()
                host = fields.pop("host")
                counts[host] = {name: int(value) for name, value in fields.items()}
        return counts


def run_playbook(playbook: str, *extra_args: str, timeout: int = 600) -> PlaybookResult:
    """Run a playbook of the scenario directory with Molecule's inventory."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    command = ["ansible-playbook", "-i", inventory, str(scenario / playbook), *extra_args]
    environment = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=environment)
    return PlaybookResult(completed.returncode, ANSI_ESCAPE.sub("", completed.stdout + completed.stderr))
