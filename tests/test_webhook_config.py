"""Routing table, webhook environment, `garo validate --routes`, and the real gunicorn entry point."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scaler.bus.sqlite import SqliteBus
from scaler.cli import main
from scaler.config import ConfigError, parse_stack_config
from scaler.config.routing import load_routing_table, parse_routing_table, routing_document
from scaler.webhook.settings import settings_from_env
from tests.harness.webhooks import ROUTES, SECRET, load_examples, sign, to_bytes

ROOT = Path(__file__).resolve().parents[1]
TABLE = parse_routing_table(ROUTES)


@pytest.mark.parametrize(
    ("org", "repo", "labels", "expected"),
    [
        ("octo-org", "octo-org/x", ["gpu", "db-app", "dc-03"], ("routed", "data", "gpu")),
        ("OCTO-ORG", "octo-org/x", ["Self-Hosted", "GPU"], ("routed", "data", "gpu")),  # case-insensitive
        ("octo-org", "octo-org/etl", ["self-hosted", "data-cpu"], ("routed", "data", "cpu")),
        ("octo-org", "octo-org/web", ["self-hosted", "data-cpu"], ("unmatched", None, None)),  # repo not allowed
        ("octo-org", "octo-org/x", ["self-hosted", "gpu", "huge"], ("unmatched", None, None)),  # not a subset
        ("lineville", "lineville/x", ["self-hosted", "gpu"], ("unmatched", None, None)),  # other org's group
        ("octo-org", "octo-org/x", ["ubuntu-latest"], ("github-hosted", None, None)),
        ("lineville", "lineville/x", ["self-hosted"], ("routed", "platform", "k8s")),
        ("octo-org", "octo-org/x", [], ("unmatched", None, None)),  # fits every group, asks for none
    ],
)
def test_matching_follows_github_label_semantics(
    org: str, repo: str, labels: list[str], expected: tuple[str, str | None, str | None]
) -> None:
    decision = TABLE.match(org, repo, labels)
    route = decision.route
    assert (decision.outcome, route and route.department, route and route.group) == expected


def test_closest_fit_wins() -> None:
    table = parse_routing_table(
        {
            "version": 1,
            "departments": [
                # Neither label set contains the other (else the table is refused: see below),
                # but a job asking only for `gpu` fits both: the group with fewer labels takes it.
                {
                    "name": "a",
                    "org": "o",
                    "groups": [{"name": "big", "labels": ["self-hosted", "linux", "gpu", "x", "y"]}],
                },
                {
                    "name": "b",
                    "org": "o",
                    "groups": [{"name": "small", "labels": ["self-hosted", "linux", "gpu", "z"]}],
                },
            ],
        }
    )
    assert table.match("o", "o/r", ["self-hosted", "gpu"]).route.group == "small"  # type: ignore[union-attr]


def test_groups_whose_labels_contain_one_another_are_refused() -> None:
    """A job for `[gpu]` could run on `[gpu, x]`'s runners: another department's VM."""
    with pytest.raises(ConfigError, match="a/big .* and b/small .* collide"):
        parse_routing_table(
            {
                "version": 1,
                "departments": [
                    {"name": "a", "org": "o", "groups": [{"name": "big", "labels": ["self-hosted", "gpu", "x"]}]},
                    {"name": "b", "org": "o", "groups": [{"name": "small", "labels": ["self-hosted", "gpu"]}]},
                ],
            }
        )


def test_routing_table_errors_name_key_paths(tmp_path: Path) -> None:
    bad = {
        "version": 2,
        "departments": [
            {"name": "Data", "org": "o", "groups": [{"name": "g", "labels": ["gpu"]}]},
            {"name": "web", "groups": [{"name": "g", "labels": ["self-hosted", "a"], "repositories": "r", "size": 3}]},
            {"name": "x", "org": "o", "groups": [{"name": "g", "labels": ["self-hosted", "A"]}]},
            {"name": "y", "org": "o", "groups": [{"name": "h", "labels": ["self-hosted", "a"]}]},
        ],
    }
    path = tmp_path / "routes.yaml"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as caught:
        load_routing_table(path)
    paths = {issue.path for issue in caught.value.issues}
    assert {
        "version",
        "departments[0].name",
        "departments[0].groups[0].labels",
        "departments[1].org",
        "departments[1].groups[0].repositories",
        "departments[1].groups[0].size",
        "departments",  # x/g and y/h cannot be told apart
    } <= paths
    with pytest.raises(ConfigError, match="not valid JSON or YAML"):
        path.write_text("departments: [")
        load_routing_table(path)


def test_routing_document_from_department_stacks_round_trips() -> None:
    config = parse_stack_config(
        {
            "garo:department": "data",
            "garo:region": "europe-west4",
            "garo:github": {"org": "octo-org"},
            "garo:network": {"cidr": "10.20.0.0/16"},
            "garo:groups": [{"name": "gpu", "labels": ["self-hosted", "linux", "gpu"], "repositories": ["ml"]}],
        }
    )
    table = parse_routing_table(routing_document([config]))
    route = table.match("octo-org", "octo-org/ml", ["self-hosted", "gpu"]).route
    assert route is not None and (route.department, route.group) == ("data", "gpu")


def test_garo_validate_checks_routing_tables(tmp_path: Path) -> None:
    good, bad = tmp_path / "routes.json", tmp_path / "bad.yaml"
    good.write_text(json.dumps(ROUTES))
    bad.write_text("version: 1\ndepartments:\n  - name: data\n    org: o\n    groups: []\n")
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", "--routes", str(good)])
    assert ok.exit_code == 0 and "ok:" in ok.output
    failed = runner.invoke(main, ["validate", "--routes", str(bad)])
    assert failed.exit_code == 1
    assert "departments[0].groups" in failed.output


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(ROUTES))
    return {"GARO_ROUTES": str(routes), "GARO_BUS": f"sqlite://{tmp_path}/bus.db", **extra}


def test_settings_from_env(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file-0123456789\n")
    settings = settings_from_env(
        _env(tmp_path, GARO_WEBHOOK_SECRET_FILE=str(secret_file), GARO_WEBHOOK_SECRET_PREVIOUS="old-one-rotated-out")
    )
    assert settings.secrets == (b"from-a-file-0123456789", b"old-one-rotated-out")
    assert "from-a-file" not in repr(settings) and "old-one" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        settings_from_env(
            {
                "GARO_WEBHOOK_SECRET": "hunter2",
                "GARO_WEBHOOK_SECRET_FILE": str(secret_file),
                "GARO_BUS": "redis://x",
                "GARO_WEBHOOK_MAX_BODY": "lots",
                "GARO_LOG_LEVEL": "chatty",
            }
        )
    message = str(caught.value)
    for name in ("GARO_WEBHOOK_SECRET", "GARO_ROUTES", "GARO_BUS", "GARO_WEBHOOK_MAX_BODY", "GARO_LOG_LEVEL"):
        assert name in message
    assert "hunter2" not in message and "from-a-file" not in message


@pytest.mark.parametrize(
    ("bus", "complaint"),
    [
        ("sqlite://bus.db?timeout=abc", "timeout= must be a number"),
        ("sqlite://bus.db?synchronous=sometimes", "synchronous= must be one of"),
        ("sqlite://bus.db?synchronous=off", "synchronous=OFF is refused"),
        ("sqlite://bus.db?fsync=1", "expected sqlite://<path>"),
        ("sqlite://", "expected sqlite://<path>"),
        ("pubsub://project-only", "expected pubsub://<project>/<topic or subscription>"),
        ("redis://localhost/0", "unknown bus URL scheme 'redis'"),
        ("pubsub://p/t?timeout=-1", "timeout= must not be negative"),
    ],
)
def test_a_bad_bus_url_is_refused_before_any_worker_starts(tmp_path: Path, bus: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        settings_from_env(_env(tmp_path, GARO_WEBHOOK_SECRET=SECRET, GARO_BUS=bus))


@pytest.mark.parametrize(
    ("value", "complaint"),
    [(" ", "only whitespace"), ("\n", "only whitespace"), ("hunter2-secret", "shorter than 16")],
)
@pytest.mark.parametrize("variant", ["env", "file"])
def test_weak_secrets_are_refused_without_being_echoed(
    tmp_path: Path, variant: str, value: str, complaint: str
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(value)
    source = {"GARO_WEBHOOK_SECRET": value} if variant == "env" else {"GARO_WEBHOOK_SECRET_FILE": str(secret_file)}
    with pytest.raises(ConfigError, match=complaint) as caught:
        settings_from_env(_env(tmp_path, **source))
    assert "GARO_WEBHOOK_SECRET" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_secret_reads_the_same_from_env_and_file(tmp_path: Path) -> None:
    """`export S="$(cat f)"` and `S=$(< f)` keep or drop the newline; GitHub signs with neither."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = settings_from_env(_env(tmp_path, GARO_WEBHOOK_SECRET_FILE=str(secret_file)))
    from_env = settings_from_env(_env(tmp_path, GARO_WEBHOOK_SECRET=SECRET + "\n"))
    assert from_file.secrets == from_env.secrets == (SECRET.encode(),)


def test_department_names_that_extend_one_another_are_refused() -> None:
    """`data`'s names garo-data-<group>-… include `data-eng`'s garo-data-eng-…: one table cannot hold both."""
    document: dict[str, Any] = {
        "version": 1,
        "departments": [
            {"name": "data", "org": "o", "groups": [{"name": "eng-gpu", "labels": ["self-hosted", "a"]}]},
            {"name": "data-eng", "org": "o", "groups": [{"name": "gpu", "labels": ["self-hosted", "b"]}]},
        ],
    }
    with pytest.raises(ConfigError, match="'data-eng' starts with 'data-'"):
        parse_routing_table(document)
    document["departments"][1]["name"] = "dataeng"  # no hyphen after the shorter name: fine
    assert len(parse_routing_table(document).routes) == 2


def test_garo_webhook_refuses_a_bad_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARO_")}
    result = subprocess.run(
        [sys.executable, "-m", "scaler.cli", "webhook"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "GARO_WEBHOOK_SECRET" in result.stderr and "GARO_ROUTES" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _delivery(base: str, job: int) -> urllib.request.Request:
    """A signed ``waiting`` delivery of job ``job`` (distinct jobs: the same event twice is a duplicate)."""
    example = [e for e in load_examples() if e.action == "waiting"][0]
    payload = example.payload
    payload["workflow_job"]["id"] += job
    body = to_bytes(payload)
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_job",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body, SECRET),
    }
    return urllib.request.Request(f"{base}/webhook", data=body, headers=headers)


def test_garo_webhook_serves_under_gunicorn(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, **_env(tmp_path, GARO_WEBHOOK_SECRET=SECRET, GARO_WEBHOOK_BIND=f"127.0.0.1:{port}")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    tap = SqliteBus(tmp_path / "bus.db", subscription="tap")
    server = subprocess.Popen([sys.executable, "-m", "scaler.cli", "webhook"], env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        for job in range(4):  # more than one worker gets some
            assert urllib.request.urlopen(_delivery(base, job), timeout=10).status == 202
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(f"{base}/webhook", data=b"{}"), timeout=10)
        assert caught.value.code == 401
        assert urllib.request.urlopen(f"{base}/readyz", timeout=10).status == 200
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        # Summed over both workers, whichever one answered the scrape.
        assert 'garo_webhook_requests_total{outcome="published"} 4.0' in metrics, metrics
        assert len(tap.pull(max_messages=10, timeout=1)) == 4
    finally:
        server.terminate()
        server.wait(30)


def test_gunicorn_start_clears_only_prometheus_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Operators may point PROMETHEUS_MULTIPROC_DIR anywhere: only stale metric files go."""
    import importlib

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = importlib.import_module("scaler.webhook.gunicorn_conf")
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"stale")
    (tmp_path / "bus.db").write_bytes(b"keep me")
    (tmp_path / "notes.txt").write_text("keep me")
    conf.on_starting(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bus.db", "notes.txt"]
