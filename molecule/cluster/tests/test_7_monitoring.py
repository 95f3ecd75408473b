"""Prometheus scrapes every tier, and every alert and dashboard query has data."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus import EXPECTED_TARGETS, api, has_data, query

DASHBOARD = Path(__file__).resolve().parents[3] / "templates" / "grafana" / "wsfleet-dashboard.json"
ALERT_SHAPE = re.compile(r"^(?P<lhs>.+?)\s*(?:==|!=|>=|<=|>|<)\s*-?[0-9.e+]+$")


def test_every_target_is_up(scraped: None) -> None:
    targets = api("targets", state="active")["activeTargets"]
    assert len(targets) == sum(EXPECTED_TARGETS.values())
    down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert not down


def test_targets_are_scraped_on_private_addresses(scraped: None) -> None:
    for target in api("targets", state="active")["activeTargets"]:
        if target["labels"]["job"] != "prometheus":
            assert target["labels"]["instance"].startswith("172.30.233."), target["labels"]


def test_every_rule_loaded_and_healthy(scraped: None) -> None:
    rules = [rule for group in api("rules")["groups"] for rule in group["rules"]]
    assert len([r for r in rules if r["type"] == "alerting"]) >= 12
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_every_alert_query_returns_data(scraped: None) -> None:
    """The alert's query without its threshold: a rule on a missing series never fires."""
    empty = []
    for group in api("rules")["groups"]:
        for rule in group["rules"]:
            if rule["type"] != "alerting":
                continue
            match = ALERT_SHAPE.match(rule["query"].strip())
            assert match, rule["query"]
            if not has_data(query(match["lhs"])):
                empty.append((rule["name"], match["lhs"]))
    assert not empty, f"alerts whose query returns nothing: {empty}"


def test_every_dashboard_panel_returns_data(scraped: None) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    empty = []
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            if not has_data(query(expr)):
                empty.append((panel["title"], expr))
    assert not empty, f"panels returning nothing: {empty}"
