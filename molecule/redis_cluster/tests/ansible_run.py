"""Run one of the project's playbooks (playbooks/*.yml) against the scenario, with
Molecule's inventory plus any extra inventory source, while the traffic runs in
the same event loop."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from playbook_run import ANSI_ESCAPE, PlaybookResult

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


async def run_project_playbook(playbook: str, *inventories: Path, extra_args: tuple[str, ...] = ()) -> PlaybookResult:
    sources = [os.environ["MOLECULE_INVENTORY_FILE"], *map(str, inventories)]
    process = await asyncio.create_subprocess_exec(
        "ansible-playbook",
        *[argument for source in sources for argument in ("-i", source)],
        str(PROJECT / "playbooks" / playbook),
        *extra_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )
    output, _ = await process.communicate()
    result = PlaybookResult(process.returncode or 0, ANSI_ESCAPE.sub("", output.decode(errors="replace")))
    # The whole output, for whoever reads a failure later (Molecule's ephemeral directory).
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / f"{Path(playbook).stem}-{time.strftime('%H%M%S')}.log"
    log.write_text(result.output)
    return result


def failures(result: PlaybookResult) -> str:
    """What failed (each fatal task with the lines that follow it), then the recap: for assertion messages."""
    lines = result.output.splitlines()
    shown = []
    for index, line in enumerate(lines):
        if line.startswith(("fatal:", "failed:")) or "FAILED!" in line:
            shown.extend(lines[max(0, index - 2) : index + 25])
    recap = result.output[result.output.rfind("PLAY RECAP") :] if "PLAY RECAP" in result.output else result.output[-3000:]
    return "\n".join(shown)[-8000:] + "\n" + recap


async def run_under_stream(stream, playbook: str, *inventories: Path, settle: float = 3) -> tuple[PlaybookResult, float, dict]:
    """Start ``stream``, run a project playbook while it flows (a failing listener or
    publisher fails at once), let it flow ``settle`` s more, and return the
    playbook's result, its wall time and the stream's figures."""
    try:
        await stream.start()
        await stream.flow(3)
        started = time.monotonic()
        running = asyncio.create_task(run_project_playbook(playbook, *inventories))
        while not running.done():
            stream.raise_failures()
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        await stream.flow(settle)
        return running.result(), seconds, await stream.finish()
    finally:
        await stream.abort()
