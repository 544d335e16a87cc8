"""The dashboards and alert rules users import (deploy/) use only metrics Garo exports, and hold up.

Metric names are collected from the prometheus_client registries the code
builds (agent, GitHub client, webhook), not from a list kept here, so a
renamed or removed metric fails this test instead of silently blanking a
panel or never firing an alert.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from scaler.agent.metrics import AgentMetrics
from scaler.github.http import GitHubMetrics
from scaler.webhook.metrics import WebhookMetrics
from tests.agent.world import World

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "garo-alerts.yaml"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RUNBOOK = ROOT / "docs" / "operations.md"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def exported_names() -> set[str]:
    """Every series name the code's registries can expose, from each metric family's name and type."""
    agent, webhook = CollectorRegistry(), WebhookMetrics().registry
    AgentMetrics(agent), GitHubMetrics(agent)  # the agent's GitHub client shares the agent's registry
    names: set[str] = set()
    for registry in (agent, webhook):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    found = set(re.findall(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", text))
    return found - PROMQL_WORDS


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    return [t["expr"] for panel in document["panels"] for t in panel.get("targets", [])]


def test_the_expression_parser_finds_metrics_and_nothing_else() -> None:
    expr = 'histogram_quantile(0.95, sum by (le, group) (rate(garo_x_bucket{group=~"$group"}[15m]))) > 15 * 60'
    assert metric_names(expr) == {"garo_x_bucket"}
    assert metric_names("time() - garo_a - on (group) garo_b offset 5m") == {"garo_a", "garo_b"}


def test_every_alert_uses_only_exported_metrics_and_has_a_runbook() -> None:
    exported, rules = exported_names(), alert_rules()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    assert len(rules) >= 10
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric in {rule['expr']!r}"
        assert used <= exported, f"{rule['alert']} uses metrics the code does not export: {sorted(used - exported)}"
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in headings, f"{rule['alert']}: docs/operations.md has no section #{anchor}"


def test_the_alerts_cover_what_on_call_asked_for() -> None:
    """Waiting jobs, JIT budget, reconcile, VM time-to-live, 401s, 503s, bad or retried (dead-lettering) events."""
    used = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    assert {
        "garo_oldest_waiting_job_seconds",
        "garo_github_jit_budget_remaining",
        "garo_reconcile_failures_total",
        "garo_oldest_vm_age_seconds",
        "garo_vm_time_to_live_seconds",
        "garo_webhook_requests_total",
        "garo_events_total",
    } <= used
    for outcome in ("bad_signature", "bus_unavailable", "bad", "retry"):
        assert f'outcome="{outcome}"' in exprs


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_panel_uses_only_exported_metrics(path: Path) -> None:
    exported = exported_names()
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["uid"] and document["title"] and document["panels"]
    exprs = dashboard_exprs(path)
    assert len(exprs) >= 5
    for expr in exprs:
        used = metric_names(expr)
        assert used and used <= exported, f"{path.name}: {expr!r} uses {sorted(used - exported)}"


def test_the_dashboards_are_the_two_users_import() -> None:
    assert [p.name for p in DASHBOARDS] == ["department.json", "hub.json"]
    assert len({json.loads(p.read_text())["uid"] for p in DASHBOARDS}) == 2


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing: `make test` installs Debian's prometheus package (scripts/ensure-system-tools)")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_the_agent_sets_the_ages_the_alerts_read() -> None:
    """A job that cannot get a runner (the VM never boots) shows as an old waiting job and an old VM."""
    world = World(boot_delay=10_000)
    world.queue("linux")
    world.step()
    world.advance(600)
    world.step()  # reconcile is due again
    registry = world.agents[0].metrics.registry
    sample = registry.get_sample_value
    assert sample("garo_oldest_waiting_job_seconds", {"group": "linux"}) == pytest.approx(600, abs=1)
    assert sample("garo_oldest_vm_age_seconds", {"group": "linux"}) == pytest.approx(600, abs=1)
    ttl = world.config.group("linux").time_to_live
    assert sample("garo_vm_time_to_live_seconds", {"group": "linux"}) == ttl
    assert sample("garo_reconcile_last_success_timestamp_seconds") == world.now
    assert sample("garo_reconcile_failures_total") == 0
