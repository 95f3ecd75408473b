"""Through the load balancer: cross-server delivery and affinity (playbooks/smoke.yml)."""

import json
import re
import subprocess
import sys
from pathlib import Path

from playbook_run import run_playbook


def test_smoke_playbook_proves_cross_server_delivery_and_cookie_affinity():
    result = run_playbook("../../playbooks/smoke.yml")
    assert result.returncode == 0, result.output

    # The playbook's report, as Ansible prints it (YAML or JSON, by configuration).
    def field(name: str) -> str | None:
        match = re.search(rf'^\s+"?{name}"?: "?([^",\s]+)"?,?$', result.output, re.MULTILINE)
        return match.group(1) if match else None

    assert field("from") and field("to"), result.output
    assert field("from") != field("to")
    assert field("mode") == "cookie", result.output


def test_smoke_check_fails_when_affinity_does_not_hold():
    """The smoke check can fail: ip_hash expectations against a cookie-balanced LB spread."""
    script = Path(__file__).resolve().parents[3] / "playbooks/files/smoke_check.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--url", "ws://127.0.0.1:18080/ws", "--affinity", "ip_hash", "--repeat", "12"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert completed.returncode == 1, report
    assert "ip_hash affinity" in report["failure"]
