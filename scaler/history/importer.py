"""`garo history import`: history from what Garo already holds, the embedded bus or the webhook's logs.

Each `workflow_job` event says one thing about a job; the events of one job
are merged into one record:

* queued: created_at (from the payload; the event's own time if it lacks one);
* in_progress: started_at and the runner's name;
* completed: completed_at and the conclusion (and started_at and runner, if
  the in_progress event was lost: the completed payload repeats them).

The bus holds the raw payloads GitHub signed, so bus records are complete.
The webhook's log lines (scaler/logs.py) hold the action, job id,
repository, department and group, and the time the webhook saw the event:
such records carry no labels (their `group` says where the job went), no
runner name and no conclusion, and their times are the webhook's.

Messages are treated as possibly forged: one that is not a well-formed event,
or a job whose events disagree (two repositories for one id), is rejected with
its message id or line number; nothing is dropped without being counted.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaler.history.record import JobRecord, RecordError, parse_time

WEBHOOK_LOGGER = "scaler.webhook"


class HistoryImportError(ValueError):
    """The source cannot be read at all (not a bus file, not readable)."""


@dataclass
class _Job:
    """The merged evidence about one job, and where it came from (for error messages)."""

    id: int
    repository: str
    where: str
    labels: tuple[str, ...] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_attempt: int | None = None
    runner_name: str | None = None
    conclusion: str | None = None
    run_id: int | None = None
    department: str | None = None
    group: str | None = None
    problem: str | None = None


@dataclass
class ImportReport:
    source: str
    records: list[JobRecord] = field(default_factory=list)
    events: int = 0
    rejected: list[str] = field(default_factory=list)  # "<where>: <why>"
    ignored: int = 0  # lines or messages that are not workflow_job events (counted, not errors)
    incomplete: int = 0  # jobs without a completed event

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.records)} jobs from {self.events} events; "
            f"{len(self.rejected)} rejected; {self.incomplete} not completed; {self.ignored} other entries ignored"
        )


class _Merger:
    def __init__(self, report: ImportReport, source: str) -> None:
        self.report = report
        self.source = source
        self.jobs: dict[int, _Job] = {}

    def add(self, where: str, action: str, job_id: int, repository: str, when: datetime, **facts: Any) -> None:
        self.report.events += 1
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = _Job(job_id, repository, where)
        if job.problem is not None:
            return
        if repository != job.repository:
            job.problem = f"{where} says repository {repository!r}, {job.where} said {job.repository!r}"
            return
        labels = facts.get("labels")
        if labels is not None:
            if job.labels is not None and job.labels != labels:
                job.problem = f"{where} says labels {list(labels)}, {job.where} said {list(job.labels)}"
                return
            job.labels = labels
        for key in ("run_attempt", "run_id", "department", "group"):
            if facts.get(key) is not None:
                setattr(job, key, facts[key])
        job.created_at = job.created_at or facts.get("created_at") or (when if action == "queued" else None)
        if action in ("in_progress", "completed") and facts.get("runner_name"):
            job.runner_name = job.runner_name or facts["runner_name"]
            job.started_at = job.started_at or facts.get("started_at") or (when if action == "in_progress" else None)
        elif action == "in_progress":
            job.started_at = job.started_at or when
        if action == "completed":
            job.completed_at = facts.get("completed_at") or when
            job.conclusion = facts.get("conclusion")

    def finish(self) -> None:
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.problem is not None:
                self.report.rejected.append(f"job {job.id}: events disagree: {job.problem}")
                continue
            try:
                if job.created_at is None:
                    raise RecordError("no event says when it was queued")
                record = JobRecord(
                    id=job.id,
                    repository=job.repository,
                    labels=job.labels or (),
                    created_at=job.created_at,
                    started_at=job.started_at,
                    completed_at=job.completed_at,
                    run_attempt=job.run_attempt,
                    runner_name=job.runner_name,
                    conclusion=job.conclusion,
                    run_id=job.run_id,
                    department=job.department,
                    group=job.group,
                    source=self.source,
                )
            except RecordError as exc:
                self.report.rejected.append(f"job {job.id} (first seen at {job.where}): {exc}")
                continue
            self.report.incomplete += record.completed_at is None
            self.report.records.append(record)
        self.report.records.sort(key=lambda r: (r.created_at, r.id))


def _time_or_none(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _payload_facts(payload: object) -> tuple[str, int, str, dict[str, Any]]:
    """(action, job id, repository, facts) from a workflow_job payload; ValueError says what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    action, job, repo = payload.get("action"), payload.get("workflow_job"), payload.get("repository")
    if not isinstance(action, str) or not isinstance(job, dict) or not isinstance(repo, dict):
        raise ValueError("not a workflow_job event (action, workflow_job and repository are needed)")
    job_id, full_name, labels = job.get("id"), repo.get("full_name"), job.get("labels")
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise ValueError("workflow_job.id is not an integer")
    if not isinstance(full_name, str):
        raise ValueError("repository.full_name is missing")
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError("workflow_job.labels is not a list of strings")
    attempt, run_id = job.get("run_attempt"), job.get("run_id")
    facts = {
        "labels": tuple(labels),
        "created_at": _time_or_none(job.get("created_at")),
        "started_at": _time_or_none(job.get("started_at")),
        "completed_at": _time_or_none(job.get("completed_at")),
        "runner_name": job.get("runner_name") if isinstance(job.get("runner_name"), str) else None,
        "conclusion": job.get("conclusion") if isinstance(job.get("conclusion"), str) else None,
        "run_attempt": attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        "run_id": run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None,
    }
    return action, job_id, full_name, facts


def import_bus(path: Path, department: str | None = None) -> ImportReport:
    """Every workflow_job message the embedded bus still holds (it keeps them `retention`, 7 days by default)."""
    report = ImportReport(f"bus {path}")
    merger = _Merger(report, "bus")
    if not path.is_file():
        raise HistoryImportError(f"{path}: no such file")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, data, attributes, published_at FROM messages ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise HistoryImportError(f"{path}: not an embedded bus file ({exc})") from None
    for message_id, data, attributes, published_at in rows:
        where = f"bus message {message_id}"
        try:
            attrs = json.loads(attributes)
            payload = json.loads(bytes(data))
        except (ValueError, TypeError, RecursionError):
            report.rejected.append(f"{where}: not JSON")
            continue
        if not isinstance(attrs, dict):
            report.rejected.append(f"{where}: attributes are not a JSON object")
            continue
        if department is not None and attrs.get("department") != department:
            report.ignored += 1
            continue
        try:
            action, job_id, repository, facts = _payload_facts(payload)
        except ValueError as exc:
            report.rejected.append(f"{where}: {exc}")
            continue
        if str(attrs.get("job_id", job_id)) != str(job_id):
            report.rejected.append(f"{where}: attribute job_id {attrs.get('job_id')!r} is not the payload's {job_id}")
            continue
        facts |= {"department": attrs.get("department") or None, "group": attrs.get("group") or None}
        when = datetime.fromtimestamp(float(published_at), UTC)
        merger.add(where, action, job_id, repository, when, **facts)
    merger.finish()
    return report


def import_logs(lines: Iterable[str], name: str, department: str | None = None) -> ImportReport:
    """The webhook's `published` log lines (also as exported by Cloud Logging, under jsonPayload)."""
    report = ImportReport(f"log {name}")
    merger = _Merger(report, "log")
    for number, text in enumerate(lines, start=1):
        where = f"{name} line {number}"
        stripped = text.strip()
        if not stripped.startswith("{"):
            report.ignored += 1  # gunicorn's own lines, blank lines: not Garo's JSON
            continue
        try:
            entry = json.loads(stripped)
        except (ValueError, RecursionError):
            report.rejected.append(f"{where}: {'truncated' if not text.endswith(chr(10)) else 'not valid'} JSON")
            continue
        if not isinstance(entry, dict):
            report.rejected.append(f"{where}: not a JSON object")
            continue
        fields: Mapping[str, Any] = entry.get("jsonPayload", entry)
        if not isinstance(fields, Mapping):
            report.rejected.append(f"{where}: jsonPayload is not an object")
            continue
        if fields.get("logger") != WEBHOOK_LOGGER or fields.get("outcome") != "published":
            report.ignored += 1
            continue
        if department is not None and fields.get("department") != department:
            report.ignored += 1
            continue
        try:
            action, job_id, repository, when = _log_event(fields, entry)
        except ValueError as exc:
            report.rejected.append(f"{where}: {exc}")
            continue
        merger.add(
            where, action, job_id, repository, when, department=fields.get("department"), group=fields.get("group")
        )
    merger.finish()
    return report


def _log_event(fields: Mapping[str, Any], entry: Mapping[str, Any]) -> tuple[str, int, str, datetime]:
    action, job_id, repository = fields.get("action"), fields.get("job_id"), fields.get("repository")
    if not isinstance(action, str):
        raise ValueError("a published line without an action")
    if not isinstance(job_id, str | int) or isinstance(job_id, bool) or not str(job_id).isdigit():
        raise ValueError(f"job_id {job_id!r} is not a number")
    if not isinstance(repository, str):
        raise ValueError("a published line without a repository")
    when = _time_or_none(fields.get("time") or entry.get("timestamp"))
    if when is None:
        raise ValueError("no readable time")
    if not isinstance(fields.get("group"), str) or not fields.get("group"):
        raise ValueError("a published line without a group")
    return action, int(job_id), repository, when
