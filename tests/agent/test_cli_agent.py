"""``garo agent`` and ``garo reconcile`` as an operator (or the deployed container) runs them."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from scaler import naming
from scaler.agent.settings import SettingsError, load, read_secret
from scaler.backends.local import LocalBackend
from scaler.bus.sqlite import SqliteBus
from scaler.cli import main
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS, publish
from tests.harness.github import Reply, ScriptedGitHub


def raw_config(api_url: str, cloud: str = "local") -> dict[str, Any]:
    raw: dict[str, Any] = {
        "garo:kind": "department",
        "garo:cloud": cloud,
        "garo:region": "europe-west4" if cloud == "gcp" else "local",
        "garo:department": DEPARTMENT,
        "garo:github": {"org": "octo-org", "apiUrl": api_url},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:groups": [{"name": GROUP, "labels": LABELS, "max": 5, "warmPool": {"size": 1}, "timeToLive": 3600}],
    }
    if cloud == "gcp":
        raw["gcp:project"] = "garo-test"
    return raw


def stack_file(tmp_path: Path, api_url: str) -> Path:
    path = tmp_path / f"Pulumi.{DEPARTMENT}.yaml"
    path.write_text(yaml.safe_dump({"config": raw_config(api_url)}))
    return path


def test_reconcile_dry_run_prints_a_plan_and_changes_nothing(prism_github: str, tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"
    old = LocalBackend(fleet_dir, clock=lambda: time.time() - 7200)  # a VM past its time-to-live
    old.create(GROUP, [naming.instance_name(DEPARTMENT, GROUP, 123)], {})
    LocalBackend(fleet_dir).list(GROUP)  # it has booted
    before = (fleet_dir / "fleet.json").read_bytes()
    env = {"GARO_GITHUB_TOKEN": "dev", "GARO_FLEET_DIR": str(fleet_dir)}
    result = CliRunner().invoke(
        main, ["reconcile", "--stack", str(stack_file(tmp_path, prism_github)), "--dry-run"], env=env
    )
    assert result.exit_code == 0, result.output
    assert f"group {GROUP}: desired " in result.output
    assert "past time-to-live" in result.output and "create" in result.output
    assert (fleet_dir / "fleet.json").read_bytes() == before, "a dry run changes nothing"
    assert "dev" not in result.output


def test_agent_once_turns_a_queued_message_into_a_vm_with_its_config(prism_github: str, tmp_path: Path) -> None:
    bus_path, fleet_dir = tmp_path / "bus.db", tmp_path / "fleet"
    SqliteBus(bus_path, subscription=f"agent-{DEPARTMENT}", filter={"department": DEPARTMENT})
    publish(SqliteBus(bus_path), "queued", 555)
    env = {"GARO_GITHUB_TOKEN": "dev", "GARO_FLEET_DIR": str(fleet_dir), "GARO_BUS": f"sqlite://{bus_path}"}
    args = ["agent", "--once", "--stack", str(stack_file(tmp_path, prism_github)), "--log-level", "ERROR"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    fleet = LocalBackend(fleet_dir)
    name = naming.instance_name(DEPARTMENT, GROUP, 555)
    assert name in {i.name for i in fleet.list(GROUP)}
    assert fleet.get_metadata(GROUP, name).get("garo-jit-config"), "the VM got its JIT config"
    later = SqliteBus(
        bus_path,
        subscription=f"agent-{DEPARTMENT}",
        filter={"department": DEPARTMENT},
        clock=lambda: time.time() + 3600,
    )
    assert later.pull(10, 0) == [], "the message was acknowledged"


def deployed_env(api_url: str, **extra: str) -> dict[str, str]:
    """The container's env exactly as infra/department.py builds it."""
    raw = raw_config(api_url, cloud="gcp")
    app = {"appId": 42, "privateKey": {"secure": "[secret]"}, "scope": "organization"}
    raw["garo:github"] = {**raw["garo:github"], "runnerApp": app}
    pools = [{"name": GROUP, "mig": "garo-eng-linux", "fallbackMig": None, "zones": ["europe-west4-a"]}]
    env = {
        "GARO_DEPARTMENT": DEPARTMENT,
        "GARO_PROJECT": "garo-test",
        "GARO_REGION": "europe-west4",
        "GARO_BUS": "pubsub://garo-test/garo-eng-jobs",
        "GARO_SUBSCRIPTION": "projects/garo-test/subscriptions/garo-eng-jobs",
        "GARO_POOLS": json.dumps(pools, sort_keys=True),
        "GARO_STACK_CONFIG": json.dumps({"config": raw}, sort_keys=True),
        "GARO_GITHUB_SECRET": "projects/garo-test/secrets/garo-eng-runner-app-key",
    }
    env.update(extra)
    return env


def test_the_deployed_environment_is_understood() -> None:
    settings = load(deployed_env("https://api.github.com"))
    assert settings.config.department == DEPARTMENT and settings.config.cloud == "gcp"
    assert settings.bus == "pubsub://garo-test/garo-eng-jobs"
    assert settings.pools[GROUP].mig == "garo-eng-linux" and settings.pools[GROUP].fallback is None
    assert settings.github_secret == "projects/garo-test/secrets/garo-eng-runner-app-key"


@pytest.mark.parametrize(
    "change",
    [
        {"GARO_DEPARTMENT": "other"},
        {"GARO_REGION": "us-east1"},
        {"GARO_POOLS": "[]"},
        {"GARO_SUBSCRIPTION": "projects/garo-test/subscriptions/someone-else"},
        {"GARO_STACK_CONFIG": "{not json"},
    ],
)
def test_an_inconsistent_deployment_is_refused_with_the_variable_named(change: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load(deployed_env("https://api.github.com", **change))
    assert next(iter(change)) in str(excinfo.value)


def test_the_app_key_is_read_from_secret_manager(scripted_github: ScriptedGitHub) -> None:
    """Secret Manager's `versions/latest:access` answer, served over HTTP (same shape as the real one)."""
    pem = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n"
    body = {
        "name": "projects/123/secrets/garo-eng-github/versions/3",
        "payload": {"data": base64.b64encode(pem.encode()).decode()},
    }
    scripted_github.script(
        "GET", r"/v1/projects/garo-test/secrets/garo-eng-github/versions/latest:access", Reply(200, body)
    )
    scripted_github.script("GET", r"/v1/.*", Reply(403, {"error": {"code": 403, "message": "denied pem"}}))
    base = f"{scripted_github.url}/v1"
    assert read_secret("projects/garo-test/secrets/garo-eng-github", requests.Session(), base) == pem
    with pytest.raises(SettingsError) as excinfo:
        read_secret("projects/garo-test/secrets/other", requests.Session(), base)
    assert "403" in str(excinfo.value) and "pem" not in str(excinfo.value)
    with pytest.raises(SettingsError):
        read_secret("garo-eng-github", requests.Session(), base)


@pytest.mark.parametrize(
    ("scope", "endpoint"),
    [
        ("repository", "/repos/{owner}/{repo}/actions/runners/generate-jitconfig"),
        ("organization", "/orgs/{org}/actions/runners/generate-jitconfig"),
    ],
)
def test_a_department_registers_runners_where_its_runner_app_reaches(
    prism_github: str, github_app_key: str, tmp_path: Path, scope: str, endpoint: str
) -> None:
    """A repository-scoped runner App registers repository runners (valid per GitHub's OpenAPI, via Prism)."""
    from prometheus_client import CollectorRegistry

    from scaler.agent.cli import open_github

    key_file = tmp_path / "runner-app.pem"
    key_file.write_text(github_app_key)
    raw = raw_config(prism_github)
    app = {"appId": 42, "installationId": 7, "privateKey": {"secure": "[secret]"}, "scope": scope}
    raw["garo:github"] = {**raw["garo:github"], "runnerApp": {**app, "repositories": ["octo-org/payments"]}}
    path = tmp_path / f"Pulumi.{DEPARTMENT}.yaml"
    path.write_text(yaml.safe_dump({"config": raw}))
    registry = CollectorRegistry()
    github = open_github(load({"GARO_GITHUB_APP_KEY_FILE": str(key_file)}, str(path)), registry)

    jit = github.generate_jit_config(naming.instance_name(DEPARTMENT, GROUP, 1), 1, LABELS)

    assert jit.encoded
    calls = {
        sample.labels["endpoint"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "garo_github_api_calls_total"
    }
    assert calls == {"/app/installations/{installation_id}/access_tokens": 1, endpoint: 1}


def test_the_agents_github_client_hands_a_failing_call_back_to_the_next_pass(
    scripted_github: ScriptedGitHub, tmp_path: Path
) -> None:
    """Three quick tries, then the error: the loop retries from the truth on its next pass anyway.

    Five tries with 1, 2, 4 and 8 s of backoff held the agent's whole loop (deleting finished
    VMs too) for 7-15 s on one failing endpoint (docs/reliability.md, 1 (b)).
    """
    from scaler.agent.cli import open_github
    from scaler.github.models import GitHubError

    jit = r"/orgs/octo-org/actions/runners/generate-jitconfig"
    scripted_github.script("POST", jit, *[Reply(502, {"message": "Server Error"})] * 6)
    path = tmp_path / f"Pulumi.{DEPARTMENT}.yaml"
    path.write_text(yaml.safe_dump({"config": raw_config(scripted_github.url)}))
    github = open_github(load({"GARO_GITHUB_TOKEN": "dev-token"}, str(path)))
    with pytest.raises(GitHubError) as err:
        github.generate_jit_config(naming.instance_name(DEPARTMENT, GROUP, 1), 1, LABELS)
    assert err.value.status == 502
    assert len(scripted_github.calls("POST", jit)) == 3
