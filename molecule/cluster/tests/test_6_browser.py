"""The demo page in two headless Chromium browsers that land on different backends."""

import json
import subprocess
from pathlib import Path

from conftest import LB_HTTP

BROWSER_TESTS = Path(__file__).resolve().parents[3] / "tests/browser"


def test_two_browsers_on_two_servers_exchange_messages(tmp_path):
    completed = subprocess.run(
        ["node", str(BROWSER_TESTS / "two_browsers.mjs"), LB_HTTP + "/", str(tmp_path / "demo.png")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=BROWSER_TESTS,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1]) if completed.stdout.strip() else {}
    assert completed.returncode == 0, (report, completed.stderr[-2000:])
    assert len(set(report["pair"])) == 2
