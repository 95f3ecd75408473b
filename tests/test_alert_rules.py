"""wsfleet's Prometheus rules: promtool checks them and runs their unit tests.

The rules are the monitoring role's template rendered with the role's defaults
(the same file the role installs); tests/promtool/wsfleet-rules.test.yml holds,
for every alert, a case where it fires and one where it does not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "monitoring"
UNIT_TESTS = Path(__file__).resolve().parent / "promtool" / "wsfleet-rules.test.yml"
# Every alert is "LHS <comparison> number": the cluster scenario queries the
# LHS of each and fails when it returns nothing.
ALERT_SHAPE = re.compile(r"^(?P<lhs>.+?)\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.e+]+$")


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: run scripts/setup.sh (Debian package prometheus)")
    return found


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rules rendered by Ansible from the role's template and defaults, next to the unit tests."""
    folder = tmp_path_factory.mktemp("rules")
    ansible = Path(sys.executable).parent / "ansible"
    subprocess.run(
        [
            str(ansible),
            "localhost",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            "-e",
            f"@{ROLE / 'defaults' / 'main.yml'}",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={ROLE / 'templates' / 'wsfleet-rules.yml.j2'} dest={folder / 'wsfleet-rules.yml'} mode=0644",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return folder


def alerts(rules_dir: Path) -> dict[str, str]:
    groups = yaml.safe_load((rules_dir / "wsfleet-rules.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_dir / "wsfleet-rules.yml")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(rules_dir: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", UNIT_TESTS.name], capture_output=True, text=True, check=False, cwd=rules_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing(rules_dir: Path) -> None:
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test.get("alert_rule_test", [])]
    for name in alerts(rules_dir):
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"no promtool case where {name} fires"
        assert False in outcomes, f"no promtool case where {name} stays quiet"


def test_every_alert_compares_a_query_with_a_number(rules_dir: Path) -> None:
    for name, expr in alerts(rules_dir).items():
        assert ALERT_SHAPE.match(expr.strip()), f"{name}: {expr!r} is not 'query <comparison> number'"


def test_the_issue_s_alerts_are_all_there(rules_dir: Path) -> None:
    exprs = " ".join(alerts(rules_dir).values())
    for needle in (
        'up{job="wsfleet"}',
        "ws_redis_up",
        "wsfleet_open_files",
        "redis_clients",
        "fanout_latency",
        "slow_consumer",
        "rate_limit_closes",
        "redis_memory",
        "pubsub_output_buffer",
        "nginx_upstream_errors",
        "ws_connected_clients",
    ):
        assert needle in exprs, f"no alert on {needle}"
