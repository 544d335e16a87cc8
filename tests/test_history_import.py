"""`garo history import`: jobs rebuilt from a real bus file fed by the real webhook, and from its JSON logs."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scaler.bus.sqlite import SqliteBus
from scaler.cli import main
from scaler.history.importer import HistoryImportError, import_bus, import_logs
from scaler.history.record import read_history
from scaler.logs import JsonFormatter
from tests.harness.webhooks import Example, WebhookIntake, conforming

# Recent times: the webhook refuses events older than GitHub's redelivery window.
_BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
T0 = _BASE.strftime("%Y-%m-%dT%H:%M:%SZ")  # the job's created_at
STARTED = (_BASE + timedelta(seconds=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
COMPLETED = (_BASE + timedelta(seconds=520)).strftime("%Y-%m-%dT%H:%M:%SZ")


def lifecycle(example: Example, job_id: int, runner: str, conclusion: str) -> dict[str, bytes]:
    """queued, in_progress and completed payloads of one job, from octokit's queued example, schema-checked."""
    base = example.payload
    bodies: dict[str, bytes] = {}
    for action in ("queued", "in_progress", "completed"):
        payload: dict[str, Any] = copy.deepcopy(base)
        job = payload["workflow_job"]
        job.update(id=job_id, status=action, created_at=T0, started_at=T0)
        payload["action"] = action
        if action != "queued":
            job.update(runner_id=7, runner_name=runner, runner_group_id=1, runner_group_name="Default")
            job.update(started_at=STARTED)
        if action == "completed":
            job.update(completed_at=COMPLETED, conclusion=conclusion)
        bodies[action] = conforming("workflow_job", payload, base)
    return bodies


@pytest.fixture
def queued(webhook_examples: tuple[Example, ...]) -> Example:
    return next(e for e in webhook_examples if e.action == "queued" and b"lineville" in e.body)


@pytest.fixture
def captured_log(webhook_intake: WebhookIntake) -> Iterator[io.StringIO]:
    """The webhook's log lines, in scaler.logs' JSON format (the handler the app installed writes to stderr)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("scaler.webhook")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def feed(intake: WebhookIntake, queued: Example) -> None:
    """Two jobs of one run through the webhook: one whole, in any order and redelivered; one without in_progress."""
    first = lifecycle(queued, 12877621891, "garo-k8s-1", "success")
    second = lifecycle(queued, 12877621892, "garo-k8s-2", "failure")
    for body, delivery in (
        (first["completed"], "d-1c"),
        (first["queued"], "d-1q"),
        (first["in_progress"], "d-1p"),
        (first["in_progress"], "d-1p"),  # a redelivery
        (second["queued"], "d-2q"),
        (second["completed"], "d-2c"),  # its in_progress was lost
    ):
        assert intake.post(body, delivery=delivery).status_code == 202


def test_the_bus_gives_one_complete_record_per_job(webhook_intake: WebhookIntake, queued: Example) -> None:
    feed(webhook_intake, queued)
    report = import_bus(webhook_intake.bus_path)
    assert report.rejected == [] and report.events == 5 and report.incomplete == 0
    first, second = report.records
    assert first.to_json() == {
        "schema": "garo.job.v1",
        "id": 12877621891,
        "repository": "lineville/elastic-machines-testing",
        "labels": ["self-hosted", "k8s"],
        "created_at": T0,
        "started_at": STARTED,
        "completed_at": COMPLETED,
        "run_attempt": 1,
        "runner_name": "garo-k8s-1",
        "conclusion": "success",
        "source": "bus",
        "run_id": 4747967848,
        "department": "platform",
        "group": "k8s",
    }
    assert (second.runner_name, second.conclusion) == ("garo-k8s-2", "failure")
    assert second.started_at == _BASE + timedelta(seconds=40)  # from the completed payload


def test_forged_or_contradicting_bus_messages_are_rejected_by_message_id(
    webhook_intake: WebhookIntake, queued: Example
) -> None:
    feed(webhook_intake, queued)
    bus = SqliteBus(webhook_intake.bus_path)
    attributes = {"department": "platform", "group": "k8s", "action": "queued"}
    forged = bus.publish(b"{not json", {**attributes, "job_id": "1", "delivery": "f-1"})
    lying = bus.publish(queued.body, {**attributes, "job_id": "42", "delivery": "f-2"})
    other_repo = copy.deepcopy(queued.payload)
    other_repo["repository"]["full_name"] = "lineville/elsewhere"
    conflict = bus.publish(json.dumps(other_repo).encode(), {**attributes, "job_id": "12877621891", "delivery": "f-3"})
    bus.close()
    report = import_bus(webhook_intake.bus_path)
    assert report.rejected == [
        f"bus message {forged}: not JSON",
        f"bus message {lying}: attribute job_id '42' is not the payload's 12877621891",
        f"job 12877621891: events disagree: bus message {conflict} says repository 'lineville/elsewhere', "
        "bus message 1 said 'lineville/elastic-machines-testing'",
    ]
    assert [r.id for r in report.records] == [12877621892]


def test_the_cli_writes_nothing_when_events_are_rejected_unless_skip_bad(
    webhook_intake: WebhookIntake, queued: Example, tmp_path: Path
) -> None:
    feed(webhook_intake, queued)
    bus = SqliteBus(webhook_intake.bus_path)
    forged = bus.publish(b"[]", {"department": "platform", "group": "k8s", "action": "queued", "delivery": "f-1"})
    bus.close()
    out = tmp_path / "jobs.jsonl"
    runner = CliRunner()
    args = ["history", "import", "--bus", f"sqlite://{webhook_intake.bus_path}", "--out", str(out)]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1 and f"bus message {forged}: not a JSON object" in refused.stderr and not out.exists()
    accepted = runner.invoke(main, [*args, "--skip-bad"])
    assert accepted.exit_code == 0 and "1 rejected" in accepted.stderr
    assert [r.id for r in read_history(out).records] == [12877621891, 12877621892]
    assert runner.invoke(main, ["history", "import", "--bus", str(tmp_path / "none.db"), "--out", "x"]).exit_code == 1


def test_the_webhooks_json_log_gives_the_same_jobs_with_the_webhooks_times(
    webhook_intake: WebhookIntake, queued: Example, captured_log: io.StringIO, tmp_path: Path
) -> None:
    first = lifecycle(queued, 12877621891, "garo-k8s-1", "success")
    for action in ("queued", "in_progress", "completed"):
        assert webhook_intake.post(first[action]).status_code == 202
    lines = captured_log.getvalue().splitlines(keepends=True)
    text = ["[2026-11-30 10:00:00 +0000] [1] [INFO] Booting worker with pid: 1\n", *lines, '{"time": "2026-11'[:14]]
    report = import_logs(text, "webhook.log")
    (record,) = report.records
    assert (record.repository, record.department, record.group, record.labels) == (
        "lineville/elastic-machines-testing",
        "platform",
        "k8s",
        (),
    )
    assert record.created_at <= record.started_at <= record.completed_at  # type: ignore[operator]
    assert record.source == "log" and record.runner_name is None and record.conclusion is None
    assert report.ignored == 1  # gunicorn's own line: counted, not an error
    assert report.rejected == [f"webhook.log line {len(text)}: truncated JSON"]
    # Cloud Logging's export wraps each line under jsonPayload.
    wrapped = [json.dumps({"jsonPayload": json.loads(line)}) + "\n" for line in lines]
    assert [r.to_json() for r in import_logs(wrapped, "exported").records] == [record.to_json()]


def test_a_published_log_line_without_what_a_job_needs_is_rejected_by_line() -> None:
    line = {"time": "2026-11-30T10:00:00.000Z", "logger": "scaler.webhook", "outcome": "published"}
    lines = [json.dumps(line | {"action": "queued", "job_id": "x1", "repository": "a/b", "group": "g"}) + "\n"]
    lines.append(json.dumps(line | {"action": "queued", "job_id": "5", "repository": "a/b"}) + "\n")
    report = import_logs(lines, "w.log")
    assert report.rejected == [
        "w.log line 1: job_id 'x1' is not a number",
        "w.log line 2: a published line without a group",
    ]


def test_a_file_that_is_not_a_bus_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    path.write_text("hello")
    with pytest.raises(HistoryImportError, match="not an embedded bus file"):
        import_bus(path)
