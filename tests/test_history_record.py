"""The history format's strict reader: every bad line reported by number, nothing dropped unseen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scaler.cli import main
from scaler.history.record import HistoryError, JobRecord, read_history


def job(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": "garo.job.v1",
        "id": 1,
        "repository": "octo-org/app",
        "labels": ["self-hosted", "linux", "x64", "small"],
        "created_at": "2026-11-02T10:00:00Z",
        "started_at": "2026-11-02T10:00:30Z",
        "completed_at": "2026-11-02T10:05:30Z",
        "run_attempt": 1,
        "runner_name": "garo-small-1",
        "conclusion": "success",
        "source": "github",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def write(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_a_good_record_round_trips_with_its_wait_and_duration(tmp_path: Path) -> None:
    report = read_history(write(tmp_path / "h.jsonl", job()))
    (record,) = report.records
    assert record.wait is not None and record.wait.total_seconds() == 30
    assert record.duration is not None and record.duration.total_seconds() == 300
    assert json.loads(record.to_line()) == job()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (job(created_at=...), "missing field(s) 'created_at'"),
        (job(colour="red"), "unknown field(s) 'colour'"),
        (job(schema="garo.job.v0"), "schema must be 'garo.job.v1'"),
        (job(id="7"), "id must be an integer"),
        (job(id=0), "id must be a positive integer"),
        (job(repository="app"), "repository must look like 'owner/name'"),
        (job(labels="small"), "labels must be a list of non-empty strings"),
        (job(labels=[]), "labels is empty and no group"),
        (job(created_at="yesterday"), "created_at: not an ISO 8601 time"),
        (job(created_at="2026-11-02T10:00:00"), "created_at: time without a zone"),
        (job(started_at="2026-11-02T09:00:00Z"), "started_at is 3600s before created_at"),
        (job(completed_at="2026-11-02T09:59:00Z"), "completed_at is 90s before started_at"),
        (job(conclusion="won"), "conclusion 'won' is not one of GitHub's"),
        (job(completed_at=None), "a conclusion without completed_at"),
        (job(run_attempt=0), "run_attempt must be at least 1"),
        (job(source="guess"), "source must be one of"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema": "garo.job.v1", "id": 1', "not valid JSON"),
    ],
)
def test_each_bad_record_is_named_by_its_line(tmp_path: Path, bad: dict[str, Any] | str, message: str) -> None:
    path = write(tmp_path / "h.jsonl", job(id=10), bad if isinstance(bad, str) else {**bad}, job(id=11))
    with pytest.raises(HistoryError) as caught:
        read_history(path)
    assert f"line 2: {message}" in str(caught.value)
    assert "2 jobs (2 github), 1 bad line(s)" in str(caught.value)
    kept = read_history(path, skip_bad=True)  # with --skip-bad the rest is read, the bad line still counted
    assert [r.id for r in kept.records] == [10, 11]
    assert [e.line for e in kept.errors] == [2]


def test_a_repeated_job_and_a_truncated_last_line_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        json.dumps(job()) + "\n\n" + json.dumps(job()) + "\n" + json.dumps(job(id=2))[:40], encoding="utf-8"
    )
    report = read_history(path, skip_bad=True)
    assert [str(e) for e in report.errors] == [
        "line 3: job 1 again (first on line 1)",
        "line 4: truncated record (the file ends mid-line)",
    ]
    assert report.blank_lines == 1 and len(report.records) == 1


def test_a_record_of_a_log_import_needs_a_group_when_it_has_no_labels() -> None:
    record = JobRecord.from_json(job(labels=[], group="small", department="web", runner_name=None, source="log"))
    assert record.group == "small" and record.labels == ()


def test_garo_history_check_exits_1_and_lists_bad_lines_unless_skip_bad(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", job(id=1), job(id=2, labels=7), job(id=3, runner_name=""))
    runner = CliRunner()
    result = runner.invoke(main, ["history", "check", str(path)])
    assert result.exit_code == 1
    assert "line 2: labels must be a list" in result.stderr and "line 3: runner_name must be" in result.stderr
    assert "1 jobs (1 github), 2 bad line(s)" in result.stdout
    skipped = runner.invoke(main, ["history", "check", "--skip-bad", str(path)])
    assert skipped.exit_code == 0 and "2 bad line(s)" in skipped.stdout and "line 2:" in skipped.stderr
