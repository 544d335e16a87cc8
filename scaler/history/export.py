"""`garo history export`: an organisation's workflow jobs since a date, from GitHub, as history lines.

Resumable: progress goes to a checkpoint beside the output (see
checkpoint.py), so running the same command again after an interruption
(Ctrl-C, a network outage, a rate limit too long to wait for) continues where
it stopped and writes no job twice. Progress lines go to stderr.

A job GitHub returns that cannot be a valid record (no created_at, a run
attempt below 1...) is not written; it is counted, its reason kept in the
checkpoint and printed, and the command exits non-zero unless --skip-bad.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scaler.github.ratelimit import Clock, SystemClock
from scaler.history.checkpoint import Checkpoint, CheckpointError, CheckpointState, checkpoint_path
from scaler.history.github_jobs import RunsReader
from scaler.history.record import JobRecord, RecordError, format_time, parse_lines, parse_time

PROGRESS_EVERY = 5.0  # seconds between progress lines (and one per repository)


class ExportError(ValueError):
    """The export cannot start or go on (bad options, a checkpoint of another export...)."""


def parse_since(text: str, now: datetime) -> datetime:
    """'30d', '12h', '90m' before `now`, or an ISO date or time ('2026-10-01', '...T00:00:00Z')."""
    from scaler.github.deliveries import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        return parse_time(text)
    except ValueError:
        raise ExportError(f"--since: expected a duration (30d, 12h) or an ISO date/time, got {text!r}") from None


def job_record(job: Mapping[str, Any], repo: str) -> JobRecord:
    """A job of GitHub's REST API as a history record; RecordError if GitHub's data cannot be one."""
    status = job.get("status")
    created = job.get("created_at")
    if not isinstance(created, str):
        raise RecordError("GitHub sent no created_at")
    runner = job.get("runner_name") or None
    completed = status == "completed"
    labels = job.get("labels")
    if not isinstance(labels, list):
        raise RecordError("GitHub sent no labels list")
    obj = {
        "schema": "garo.job.v1",
        "id": job.get("id"),
        "repository": repo,
        "labels": labels,
        "created_at": created,
        # GitHub fills started_at even for a job no runner took (cancelled in the queue).
        "started_at": job.get("started_at") if runner is not None or status == "in_progress" else None,
        "completed_at": job.get("completed_at") if completed else None,
        "run_attempt": job.get("run_attempt"),
        "runner_name": runner,
        "conclusion": job.get("conclusion") if completed else None,
        "run_id": job.get("run_id"),
        "source": "github",
    }
    return JobRecord.from_json(obj)


@dataclass
class ExportReport:
    repos: int = 0
    runs: int = 0
    jobs: int = 0
    rejected: list[str] = field(default_factory=list)
    skipped_existing: int = 0
    resumed: bool = False
    calls: int = 0
    rate_limit_waited: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.jobs} jobs from {self.runs} runs in {self.repos} repositories; "
            f"{len(self.rejected)} rejected; {self.calls} API calls; "
            f"waited {self.rate_limit_waited:.0f}s for the rate limit"
        )


class Exporter:
    def __init__(
        self,
        reader: RunsReader,
        out: Path,
        *,
        org: str,
        since: datetime,
        repos: list[str] | None,
        progress: Callable[[str], None],
        clock: Clock | None = None,
    ) -> None:
        self.reader = reader
        self.out = out
        self.org = org
        self.since = since
        self.repos_option = repos
        self.progress = progress
        self.clock = clock or SystemClock()
        self._last_progress = float("-inf")

    def run(self) -> ExportReport:
        report = ExportReport()
        state, checkpoint, seen = self._open(report)
        try:
            with self.out.open("a", encoding="utf-8") as stream:
                if state.repos is None:
                    state.repos = self.repos_option or self.reader.org_repos(self.org)
                    checkpoint.repos(state.repos)
                for index, repo in enumerate(state.repos, start=1):
                    if repo in state.done_repos:
                        continue
                    self._export_repo(repo, index, len(state.repos), state, checkpoint, stream, seen, report)
                    checkpoint.repo_done(repo)
                    report.repos += 1
                report.jobs = len(seen)
                checkpoint.finished(report.jobs)
        finally:
            checkpoint.close()
            report.calls = self.reader.calls
            report.rate_limit_waited = self.reader.pacer.waited
            report.rejected = state.rejected
        return report

    def _open(self, report: ExportReport) -> tuple[CheckpointState, Checkpoint, set[int]]:
        """Start a new export, or check the checkpoint belongs to this one and resume it."""
        path = checkpoint_path(self.out)
        if not path.exists():
            if self.out.exists() and self.out.stat().st_size > 0:
                raise ExportError(f"{self.out} exists and has no checkpoint beside it; choose another --out")
            self.out.write_text("", encoding="utf-8")
            checkpoint = Checkpoint.start(path, self.org, self.since, self.repos_option)
            return CheckpointState(self.org, self.since, self.repos_option), checkpoint, set()
        try:
            state = Checkpoint.load(path)
        except CheckpointError as exc:
            raise ExportError(str(exc)) from None
        if state.org != self.org or state.repos_option != self.repos_option:
            raise ExportError(
                f"{path} belongs to an export of {state.org} (repos: {state.repos_option or 'all'}), "
                f"not {self.org} (repos: {self.repos_option or 'all'}); use its options or another --out"
            )
        if state.finished:
            raise ExportError(f"{self.out} is complete (see {path}); choose another --out for a new export")
        self.since = state.since  # a relative --since would otherwise move on every resume
        report.resumed = True
        seen = self._jobs_on_disk()
        report.skipped_existing = len(seen)
        self.progress(
            f"resuming the export started for jobs since {format_time(state.since)}: "
            f"{len(state.done_repos)} repositories and {len(state.done_runs)} runs done, {len(seen)} jobs on disk"
        )
        return state, Checkpoint.reopen(path), seen

    def _jobs_on_disk(self) -> set[int]:
        """Job ids already written; a last line torn by the interruption is cut off (its run is fetched again)."""
        data = self.out.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.out.open("r+b") as stream:
                stream.truncate(keep)
            self.progress(f"{self.out}: cut a partial last line left by the interruption")
            data = data[:keep]
        report = parse_lines(data.decode("utf-8").splitlines(keepends=True), str(self.out))
        if report.errors:
            raise ExportError(f"{self.out} has bad lines, so it cannot be resumed:\n" + "\n".join(report.error_lines()))
        return {r.id for r in report.records}

    def _export_repo(
        self,
        repo: str,
        index: int,
        total: int,
        state: CheckpointState,
        checkpoint: Checkpoint,
        stream: Any,
        seen: set[int],
        report: ExportReport,
    ) -> None:
        run_ids = []
        for run in self.reader.runs(repo, self.since):
            run_id = run.get("id")
            if isinstance(run_id, int) and not isinstance(run_id, bool) and run_id not in run_ids:
                run_ids.append(run_id)
        for number, run_id in enumerate(run_ids, start=1):
            if run_id in state.done_runs:
                continue
            lines = []
            for job in self.reader.jobs(repo, run_id):
                try:
                    record = job_record(job, repo)
                except RecordError as exc:
                    reason = f"{repo} run {run_id} job {job.get('id')!r}: {exc}"
                    state.rejected.append(reason)
                    checkpoint.rejected(reason)
                    continue
                if record.id not in seen:
                    seen.add(record.id)
                    lines.append(record.to_line())
            stream.write("".join(lines))
            stream.flush()
            os.fsync(stream.fileno())  # the jobs are on disk before the run is marked done
            checkpoint.run_done(repo, run_id)
            state.done_runs.add(run_id)
            report.runs += 1
            self._tick(f"[{index}/{total}] {repo}: run {number}/{len(run_ids)}; {len(seen)} jobs written")
        self._tick(f"[{index}/{total}] {repo}: done, {len(run_ids)} runs; {len(seen)} jobs written", force=True)

    def _tick(self, message: str, force: bool = False) -> None:
        now = self.clock.monotonic()
        if not force and now - self._last_progress < PROGRESS_EVERY:
            return
        self._last_progress = now
        limit = self.reader.pacer.http.rate_limit
        budget = f"; rate limit {limit.remaining}/{limit.limit} left" if limit.remaining is not None else ""
        self.progress(f"export: {message}; {self.reader.calls} API calls{budget}")


def default_since(now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=30)
