"""`garo history export`: against Prism (GitHub's OpenAPI) and a scripted GitHub for pages, resume and rate limits.

Prism checks every request the exporter makes; it cannot serve a consistent
multi-page listing or rate-limit headers, so the scripted server does, and
forwards each request it receives to Prism too: a request that breaks the
spec fails those tests as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from scaler.github.client import GitHubClient
from scaler.github.models import GitHubError
from scaler.history.checkpoint import checkpoint_path
from scaler.history.export import Exporter, ExportError
from scaler.history.github_jobs import Pacer, RunsReader
from scaler.history.record import format_time, read_history
from tests.harness.github import FakeClock, Recorded, Reply, ScriptedGitHub

LIMIT = 5000


def make_exporter(
    url: str, out: Path, clock: FakeClock, *, since: datetime, repos: list[str] | None = None, **options: Any
) -> tuple[Exporter, list[str]]:
    client = GitHubClient("acme", token="test-token", api_url=url, clock=clock, max_attempts=3, **options)
    lines: list[str] = []
    reader = RunsReader(client, Pacer(client.http, clock, reserve=0.2, slow_below=0.5))
    exporter = Exporter(reader, out, org="acme", since=since, repos=repos, progress=lines.append, clock=clock)
    return exporter, lines


# ---------------------------------------------------------------------------- Prism


class RecordingSession(requests.Session):
    """Asks Prism for schema-generated jobs (its static job example breaks the schema) and keeps every answer."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: list[tuple[str, int, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if re.search(r"/actions/runs/\d+/jobs$", urlsplit(str(url)).path):
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Prefer": "dynamic=true"}
        response = super().request(method, url, *args, **kwargs)
        self.answers.append((urlsplit(str(url)).path, response.status_code, response.json()))
        return response


def test_export_conforms_to_githubs_openapi_and_keeps_or_rejects_every_job(prism_github: str, tmp_path: Path) -> None:
    # Prism's schema-generated job lists are random and sometimes empty: export again until one is not.
    for attempt in range(10):
        session = RecordingSession()
        out = tmp_path / f"jobs-{attempt}.jsonl"
        # Prism's run example was created on 2020-01-22; its Link header always says "next": a short page ends it.
        since = datetime(2020, 1, 1, tzinfo=UTC)
        report = make_exporter(prism_github, out, FakeClock(), since=since, session=session)[0].run()
        jobs_sent = sum(len(body["jobs"]) for path, _, body in session.answers if path.endswith("/jobs"))
        if jobs_sent:
            break
    paths = [path for path, _, _ in session.answers]
    assert paths[0] == "/orgs/acme/repos"
    assert "/repos/octocat/Hello-World/actions/runs" in paths
    assert "/repos/octocat/Hello-World/actions/runs/30433642/jobs" in paths
    assert all(status == 200 for _, status, _ in session.answers), session.answers  # Prism found no broken request
    written = read_history(out).records  # what was written passes the strict reader
    assert len(written) + len(report.rejected) == jobs_sent > 0
    assert all(reason.startswith("octocat/Hello-World run 30433642 job") for reason in report.rejected)


# ---------------------------------------------------------------------------- scripted GitHub

SINCE = datetime(2026, 10, 1, tzinfo=UTC)


def iso(when: datetime) -> str:
    return format_time(when) or ""


class FakeOrg:
    """An organisation's repositories, runs and jobs, served in pages with GitHub's Link headers."""

    def __init__(self, github: ScriptedGitHub, prism: str | None = None) -> None:
        self.github = github
        self.prism = prism
        self.violations: list[str] = []
        self.repos = [f"acme/r{i:03d}" for i in range(101)]  # two pages
        self.runs: dict[str, list[dict[str, Any]]] = {repo: [] for repo in self.repos}
        self.jobs: dict[int, list[dict[str, Any]]] = {}
        self.broken_run: int | None = None  # answers 500 while set
        self.headers: Callable[[], dict[str, str]] = dict
        job_id = 1000
        self.pending: list[Reply] = []  # answers to the next jobs requests, before the data
        for repo, count in (("acme/r000", 250), ("acme/r100", 3)):
            for n in range(count):  # newest first, as GitHub lists them; r000's runs from n=110 on predate SINCE
                run_id = 10_000 + len(self.jobs)
                created = SINCE + timedelta(hours=4 * (110 - n), minutes=-1)
                self.runs[repo].append({"id": run_id, "created_at": iso(created), "status": "completed"})
                jobs = 120 if n == 5 else 2  # one run with a matrix of 120 jobs: two pages
                self.jobs[run_id] = [self.job(job_id + k, run_id, created) for k in range(jobs)]
                job_id += jobs
        github.script("GET", r"/orgs/acme/repos", self.answer(lambda _: [{"full_name": r} for r in self.repos]))
        github.script("GET", r"/repos/acme/\w+/actions/runs", self.answer(self.runs_of, "workflow_runs"))
        github.script("GET", r"/repos/acme/\w+/actions/runs/\d+/jobs", self.answer(self.jobs_of, "jobs"))

    @staticmethod
    def job(job_id: int, run_id: int, created: datetime) -> dict[str, Any]:
        return {
            "id": job_id,
            "run_id": run_id,
            "run_attempt": 1,
            "status": "completed",
            "conclusion": "success",
            "labels": ["self-hosted", "linux", "x64", "small"],
            "created_at": iso(created),
            "started_at": iso(created + timedelta(seconds=40)),
            "completed_at": iso(created + timedelta(minutes=6)),
            "runner_name": f"garo-small-{job_id}",
        }

    def runs_of(self, path: str) -> list[dict[str, Any]]:
        return self.runs[f"acme/{path.split('/')[3]}"]

    def jobs_of(self, path: str) -> list[dict[str, Any]]:
        run_id = int(path.split("/")[6])
        if run_id == self.broken_run:
            raise LookupError
        return self.jobs[run_id]

    def answer(
        self, items: Callable[[str], list[dict[str, Any]]], key: str | None = None
    ) -> Callable[[Recorded], Reply]:
        def reply(rec: Recorded) -> Reply:
            path, query = rec.path.split("?")[0], parse_qs(urlsplit(rec.path).query)
            if self.prism is not None:  # the same request, checked against GitHub's OpenAPI
                checked = requests.get(self.prism + rec.path, headers={"Authorization": "Bearer x"}, timeout=30)
                if checked.status_code == 422:
                    self.violations.append(f"{rec.path}: {checked.text[:300]}")
            if key == "jobs" and self.pending:
                return self.pending.pop(0)
            try:
                everything = items(path)
            except LookupError:
                return Reply(500, {"message": "Server Error"}, self.headers())
            page, per_page = int(query.get("page", ["1"])[0]), int(query.get("per_page", ["30"])[0])
            chunk = everything[(page - 1) * per_page : page * per_page]
            headers = self.headers()
            if page * per_page < len(everything):  # GitHub's next links name another path (and host) form
                headers["Link"] = (
                    f'<https://api.github.com/repositories/1/x?per_page={per_page}&page={page + 1}>; rel="next"'
                )
            return Reply(200, {"total_count": len(everything), key: chunk} if key else chunk, headers)

        return reply

    def expected_jobs(self) -> set[int]:
        return {
            job["id"]
            for repo_runs in self.runs.values()
            for run in repo_runs
            if run["created_at"] >= iso(SINCE)
            for job in self.jobs[run["id"]]
        }


def test_pages_are_followed_and_paging_stops_at_runs_older_than_since(
    scripted_github: ScriptedGitHub, prism_github: str, tmp_path: Path
) -> None:
    org = FakeOrg(scripted_github, prism_github)
    out = tmp_path / "jobs.jsonl"
    exporter, progress = make_exporter(scripted_github.url, out, FakeClock(), since=SINCE)
    report = exporter.run()
    assert org.violations == []
    records = read_history(out).records
    assert {r.id for r in records} == org.expected_jobs() and len(records) == 110 * 2 + 118 + 3 * 2
    assert report.repos == 101 and report.runs == 113 and report.rejected == []
    # Both pages of repositories and of the 120-job matrix; runs page 2 reaches past SINCE, so no page 3.
    assert [c.path for c in scripted_github.calls("GET", r"/orgs/acme/repos")][-1].endswith("page=2")
    assert len(scripted_github.calls("GET", r"/repos/acme/r000/actions/runs")) == 2
    assert len(scripted_github.calls("GET", r"/repos/acme/r000/actions/runs/10005/jobs")) == 2
    # Requests stay on our API URL, whatever host the Link header names.
    assert all(c.headers.get("Authorization") == "Bearer test-token" for c in scripted_github.requests)
    assert any("acme/r100: done, 3 runs" in line for line in progress)


def test_an_interrupted_export_resumes_without_fetching_or_writing_anything_twice(
    scripted_github: ScriptedGitHub, tmp_path: Path
) -> None:
    org = FakeOrg(scripted_github)
    org.broken_run = 10_050  # GitHub fails on this run's jobs until it recovers
    out = tmp_path / "jobs.jsonl"
    exporter, _ = make_exporter(scripted_github.url, out, FakeClock(), since=SINCE)
    with pytest.raises(GitHubError):
        exporter.run()
    before = read_history(out).records
    assert len(before) == 50 * 2 + 118  # the 50 runs before the broken one
    with out.open("a", encoding="utf-8") as stream:  # a crash in the middle of a line
        stream.write('{"schema":"garo.job.v1","id":')
    org.broken_run = None
    first_run_calls = len(scripted_github.calls("GET", r"/repos/acme/r000/actions/runs/10000/jobs"))
    # A relative --since would have moved; the checkpoint's is used.
    resumed, progress = make_exporter(scripted_github.url, out, FakeClock(), since=SINCE + timedelta(days=3))
    report = resumed.run()
    assert report.resumed and any("cut a partial last line" in line for line in progress)
    records = read_history(out).records  # the strict reader also rejects a job written twice
    assert {r.id for r in records} == org.expected_jobs()
    assert len(scripted_github.calls("GET", r"/repos/acme/r000/actions/runs/10000/jobs")) == first_run_calls
    with pytest.raises(ExportError, match="is complete"):
        make_exporter(scripted_github.url, out, FakeClock(), since=SINCE)[0].run()


def test_a_checkpoint_of_another_export_or_an_existing_output_is_refused(
    scripted_github: ScriptedGitHub, tmp_path: Path
) -> None:
    FakeOrg(scripted_github)
    out = tmp_path / "jobs.jsonl"
    out.write_text("something\n")
    with pytest.raises(ExportError, match="exists and has no checkpoint"):
        make_exporter(scripted_github.url, out, FakeClock(), since=SINCE)[0].run()
    assert out.read_text() == "something\n" and not checkpoint_path(out).exists()
    other = tmp_path / "other.jsonl"
    make_exporter(scripted_github.url, other, FakeClock(), since=SINCE, repos=["acme/r100"])[0].run()
    # Complete; now make it look interrupted, and resume it with other options.
    lines = checkpoint_path(other).read_text().splitlines()
    checkpoint_path(other).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ExportError, match="belongs to an export of acme \\(repos: \\['acme/r100'\\]\\)"):
        make_exporter(scripted_github.url, other, FakeClock(), since=SINCE)[0].run()


def test_the_export_slows_down_as_the_budget_runs_low_and_honours_retry_after(
    scripted_github: ScriptedGitHub, tmp_path: Path
) -> None:
    org = FakeOrg(scripted_github)
    clock = FakeClock()
    remaining = iter([4000, 2000, 1000] + [4999] * 100)
    reset = int(clock.now) + 600
    org.headers = lambda: {
        "x-ratelimit-limit": str(LIMIT),
        "x-ratelimit-remaining": str(next(remaining)),
        "x-ratelimit-reset": str(reset),
    }
    org.pending.append(Reply(429, {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "7"}))
    out = tmp_path / "jobs.jsonl"
    exporter, _ = make_exporter(scripted_github.url, out, clock, since=SINCE, repos=["acme/r100"])
    report = exporter.run()
    assert len(read_history(out).records) == 6
    # The runs list leaves 4000: run 1's jobs go at once, get a 429 and wait its Retry-After of 7 s. Then 2000
    # are left (under half): the 1000 above the 20 % reserve are spread over the time to the reset. Then 1000
    # are left, the reserve itself: wait for the reset.
    start = 1_700_000_000
    assert clock.sleeps[0] == 7.0
    assert clock.sleeps[1] == pytest.approx((reset - (start + 7)) / 1000)
    assert clock.sleeps[2] == pytest.approx(reset - (start + 7 + clock.sleeps[1]) + 1)
    assert len(clock.sleeps) == 3
    assert report.rate_limit_waited == pytest.approx(sum(clock.sleeps[1:]))


def test_the_cli_exports_with_a_token_from_the_environment(
    scripted_github: ScriptedGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from scaler.cli import main

    FakeOrg(scripted_github)
    monkeypatch.setenv("GARO_GITHUB_TOKEN", "cli-token")
    monkeypatch.setenv("GARO_GITHUB_API_URL", scripted_github.url)
    out = tmp_path / "jobs.jsonl"
    args = ["history", "export", "--org", "acme", "--since", "2026-10-01", "--repos", "r100", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 jobs from 3 runs in 1 repositories; 0 rejected" in result.stderr
    assert "cli-token" not in result.output
    assert [json.loads(line)["repository"] for line in out.read_text().splitlines()] == ["acme/r100"] * 6
