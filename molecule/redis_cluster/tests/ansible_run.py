"""Run one of the project's playbooks (playbooks/*.yml) against the scenario, with
Molecule's inventory plus any extra inventory source, while the traffic runs in
the same event loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from playbook_run import ANSI_ESCAPE, PlaybookResult

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


async def run_project_playbook(playbook: str, *inventories: Path) -> PlaybookResult:
    sources = [os.environ["MOLECULE_INVENTORY_FILE"], *map(str, inventories)]
    process = await asyncio.create_subprocess_exec(
        "ansible-playbook",
        *[argument for source in sources for argument in ("-i", source)],
        str(PROJECT / "playbooks" / playbook),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )
    output, _ = await process.communicate()
    return PlaybookResult(process.returncode or 0, ANSI_ESCAPE.sub("", output.decode(errors="replace")))
