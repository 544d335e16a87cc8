"""`garo images` (scaler/images.py), the agent's runner-version metric and the alert rule that uses it.

The releases API is a scripted server (Prism's example release is from 2013,
so it can only say "current"; it does check the request against GitHub's
spec); registered runners come from Prism's runner example and the scripted
server.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from scaler.agent.metrics import AgentMetrics, runner_version_counts
from scaler.cli import main
from scaler.github.models import Runner
from scaler.images import Release, Status, judge_releases, parse_version, read_pin
from scaler.images import run as check
from tests.harness.github import Reply, ScriptedGitHub

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = ROOT / "images" / "variables.pkr.hcl"
RULES = ROOT / "deploy" / "prometheus" / "garo-alerts.yaml"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def release(tag: str, published: datetime, **extra: Any) -> dict[str, Any]:
    return {"tag_name": tag, "published_at": published.strftime("%Y-%m-%dT%H:%M:%SZ"), "draft": False, **extra}


def releases_server(server: ScriptedGitHub, *items: dict[str, Any]) -> dict[str, str]:
    server.script("GET", "/repos/actions/runner/releases", Reply(200, list(items)))
    return {"GARO_GITHUB_API_URL": server.url}


def test_pin_is_read_from_the_packer_variables() -> None:
    assert read_pin(VARIABLES) == (2, 338, 0)


def test_pin_past_the_30_day_window_is_refused_with_exit_3(scripted_github: ScriptedGitHub) -> None:
    env = releases_server(
        scripted_github,
        release("v2.340.0", NOW - timedelta(days=3)),
        release("v2.339.0", NOW - timedelta(days=31)),
        release("v2.338.0", NOW - timedelta(days=48)),
    )
    code, lines = check(VARIABLES, env, now=NOW)
    assert code == 3 and Status.REFUSED.value == 3
    text = "\n".join(lines)
    assert "2.339.0 came out on 2026-10-23 (31 days ago)" in text
    assert "GitHub refuses jobs" in text and "Rebuild the image with 2.340.0" in text
    assert scripted_github.calls("GET", "/repos/actions/runner/releases")[0].path.endswith("per_page=100")


def test_pin_behind_inside_the_window_exits_1_and_names_the_deadline(scripted_github: ScriptedGitHub) -> None:
    env = releases_server(scripted_github, release("v2.339.0", NOW - timedelta(days=10)))
    code, lines = check(VARIABLES, env, now=NOW)
    assert code == 1 and Status.BEHIND.value == 1
    assert "from 2026-12-13 GitHub refuses 2.338.0" in "\n".join(lines)


def test_current_pin_exits_0_and_drafts_and_prereleases_do_not_count(scripted_github: ScriptedGitHub) -> None:
    env = releases_server(
        scripted_github,
        release("v2.339.0", NOW - timedelta(days=40), draft=True),
        release("v2.339.1", NOW - timedelta(days=40), prerelease=True),
        release("v2.338.0", NOW - timedelta(days=48)),
    )
    code, lines = check(VARIABLES, env, now=NOW)
    assert code == 0 and Status.CURRENT.value == 0, lines


def test_unreachable_releases_api_and_no_runners_exit_4() -> None:
    code, lines = check(VARIABLES, {"GARO_GITHUB_API_URL": "http://127.0.0.1:9"}, now=NOW)
    assert code == 4 and Status.UNKNOWN.value == 4
    assert any("releases: cannot check: releases API unreachable" in line for line in lines)


def test_garbage_from_the_releases_api_is_a_clear_error(scripted_github: ScriptedGitHub) -> None:
    scripted_github.script("GET", "/repos/actions/runner/releases", Reply(200, b"<html>rate limited</html>"))
    code, lines = check(VARIABLES, {"GARO_GITHUB_API_URL": scripted_github.url}, now=NOW)
    assert code == 4 and any("not JSON" in line for line in lines)


def test_bad_variables_file_exits_4_and_changes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "variables.pkr.hcl"
    broken.write_text('variable "runner_version" {\n  default = "latest"\n}\n')
    code, lines = check(broken, {}, releases=False)
    assert code == 4 and lines == [f"error: {broken}: no runner_version default of the form x.y.z"]
    assert broken.read_text() == 'variable "runner_version" {\n  default = "latest"\n}\n'


def test_runners_newer_than_the_pin_mean_the_image_is_behind(scripted_github: ScriptedGitHub) -> None:
    runner = {"id": 1, "name": "garo-a-1", "os": "linux", "status": "online", "busy": True, "labels": []}
    scripted_github.script(
        "GET",
        "/orgs/octo-org/actions/runners",
        Reply(
            200,
            {
                "total_count": 3,
                "runners": [
                    {**runner, "version": "2.339.0"},
                    {**runner, "id": 2, "version": "2.338.0"},
                    {**runner, "id": 3, "version": None},
                ],
            },
        ),
    )
    env = {"GARO_GITHUB_API_URL": scripted_github.url, "GARO_GITHUB_TOKEN": "ghp_test"}
    code, lines = check(VARIABLES, env, org="octo-org", releases=False)
    assert code == Status.BEHIND
    assert "registered runners report 2.338.0 x1, 2.339.0 x1" in "\n".join(lines)
    assert "ghp_test" not in "\n".join(lines)


def test_runners_without_credentials_say_what_to_set(tmp_path: Path) -> None:
    """No token and no usable App key: the runner check says which variables it needs, and the pin is still read."""
    missing = tmp_path / "absent.pem"
    env = {"GARO_GITHUB_API_URL": "http://127.0.0.1:9", "GARO_GITHUB_APP_ID": "12"}
    code, lines = check(VARIABLES, env, org="octo-org", releases=False)
    assert code == Status.UNKNOWN
    assert (
        "runners: cannot check: --org: set GARO_GITHUB_PRIVATE_KEY (PEM) or GARO_GITHUB_PRIVATE_KEY_FILE"
        in "\n".join(lines)
    )
    code, lines = check(
        VARIABLES, {**env, "GARO_GITHUB_PRIVATE_KEY_FILE": str(missing)}, org="octo-org", releases=False
    )
    assert code == Status.UNKNOWN
    assert "runners: cannot check: --org: GARO_GITHUB_PRIVATE_KEY_FILE: cannot read it" in "\n".join(lines)


def test_cli_against_prism_runners_and_releases(prism_github: str) -> None:
    """Both requests are valid by GitHub's own spec; the examples' versions are older than the pin."""
    result = CliRunner().invoke(
        main,
        ["images", "--variables", str(VARIABLES), "--org", "octo-org"],
        env={"GARO_GITHUB_API_URL": prism_github, "GARO_GITHUB_TOKEN": "ghp_test"},
    )
    assert result.exit_code == 0, result.output
    assert "releases: current: 2.338.0 is the newest runner release" in result.output
    assert "runners: current: registered runners report 2.323.0 x2" in result.output


def test_window_starts_at_the_first_newer_release_not_the_latest() -> None:
    releases = [Release((2, 339, 0), NOW - timedelta(days=30)), Release((2, 340, 0), NOW - timedelta(days=1))]
    assert judge_releases((2, 338, 0), releases, NOW).status is Status.REFUSED
    assert judge_releases((2, 339, 0), releases, NOW).status is Status.BEHIND
    assert judge_releases((2, 340, 0), releases, NOW).status is Status.CURRENT
    assert parse_version("v2.338.0") == (2, 338, 0) and parse_version("2.338") is None


def test_runner_version_metric_counts_per_version_and_keeps_gone_versions_at_zero() -> None:
    runners = [
        Runner(1, "a", "online", True, version="2.338.0"),
        Runner(2, "b", "online", False, version="2.338.0"),
        Runner(3, "c", "offline", False),
        Runner(4, "d", "online", False, version="2.338.0\n# HELP evil"),
    ]
    assert runner_version_counts(runners) == {"2.338.0": 2, "unknown": 1, "other": 1}
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    metrics.set_runner_versions(runners)
    metrics.set_runner_versions([Runner(5, "e", "online", True, version="2.339.0")])
    value = registry.get_sample_value
    assert value("garo_runner_versions", {"version": "2.339.0"}) == 1
    assert value("garo_runner_versions", {"version": "2.338.0"}) == 0
    assert value("garo_runner_versions", {"version": "unknown"}) == 0


def exported_metric_names() -> set[str]:
    """Every sample name the agent's registry can export (families plus their suffixes)."""
    registry = CollectorRegistry()
    AgentMetrics(registry)
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def test_the_stale_image_alert_uses_what_the_agent_exports() -> None:
    """The rule in deploy/prometheus/garo-alerts.yaml (tests/test_ops_files.py checks every rule there)."""
    rules = [
        rule
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if rule["alert"] == "GaroRunnerImageBehind"
    ]
    assert len(rules) == 1
    exported = exported_metric_names()
    for rule in rules:
        used = set(re.findall(r"\bgaro_[a-z0-9_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)
        assert rule["annotations"]["summary"] and rule["for"]
