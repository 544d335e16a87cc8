"""An in-memory GitHub that behaves like GitHub for the agent's purposes (demo and tests).

It is a test double of GitHub's *behaviour*, not a mock that accepts anything:

* ``generate_jit_config`` refuses a name already used by a runner (409), needs
  labels, and returns a single-use secret; the runner exists (offline) from then on;
* a runner comes online only when a VM boots with that exact secret, once;
* a queued job goes to *any* idle online runner whose labels cover the job's
  ``runs-on`` (chosen at random) and whose runner group admits the job's
  repository (and workflow file, when the group is restricted to workflows), so
  jobs get "stolen" from the VM made for them;
* runner groups: group ids the sim did not create are the organisation's own,
  admitting every repository; groups created through the API (``visibility:
  selected``) admit exactly their selected repositories, as on GitHub;
* an ephemeral runner deregisters itself when its job ends;
* deleting a busy runner fails with 422; deleting an unknown one is fine;
* ``get_job`` needs the right repository (404 otherwise).

Every transition emits the ``workflow_job`` webhook event GitHub would send.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from scaler.github.models import GitHubError, JitConfig, Job, Runner, RunnerGroupInfo


@dataclass
class SimRunner:
    id: int
    name: str
    labels: tuple[str, ...]
    secret: str
    online: bool = False
    job: int | None = None
    group_id: int = 1  # the runner group it was registered in


@dataclass
class SimGroup:
    """A runner group created through the API: ``repositories`` are the selected ids it admits."""

    id: int
    name: str
    repositories: frozenset[int]
    workflows: tuple[str, ...] = ()  # owner/repo/.github/workflows/f.yml@ref; empty: any workflow


@dataclass
class SimJob:
    id: int
    repo: str
    labels: tuple[str, ...]
    workflow: str = ""  # workflow_job.workflow_name
    workflow_ref: str = ""  # owner/repo/.github/workflows/f.yml@ref, what a restricted group checks
    status: str = "queued"
    runner: SimRunner | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ran_on: list[str] = field(default_factory=list)


Emit = Callable[[str, dict[str, Any]], None]  # (action, webhook payload)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitHubSim:
    def __init__(self, clock: Callable[[], float], emit: Emit, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.emit = emit
        self.rng = rng or random.Random(0)
        self.runners: dict[int, SimRunner] = {}
        # name -> id of the runner last registered under it (checked against ``runners``: GitHub
        # finds a taken name without reading every runner, and so does this stand-in)
        self._by_name: dict[str, int] = {}
        self.jobs: dict[int, SimJob] = {}
        self.calls: dict[str, int] = {}
        self.used_secrets: set[str] = set()
        # Fault injection: exceptions raised by the next calls of a method.
        self.faults: dict[str, list[Exception]] = {}
        self._ids = itertools.count(1000)
        self.groups: dict[int, SimGroup] = {}
        self.repositories: dict[str, int] = {}  # full name -> id: every repository a job was queued in
        self._group_ids = itertools.count(100)
        self._job_ids = itertools.count(5_000_000_001)

    # ------------------------------------------------------------------ GitHubApi

    def _enter(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        queue = self.faults.get(method)
        if queue:
            raise queue.pop(0)

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        self._enter("generate_jit_config")
        if not labels or not name or len(name) > 64 or runner_group_id < 1:
            raise GitHubError(422, "Validation failed")
        taken = self._by_name.get(name)
        if taken is not None and taken in self.runners and self.runners[taken].name == name:
            raise GitHubError(409, "Already exists - A runner with the name already exists.")
        runner = SimRunner(next(self._ids), name, tuple(labels), secrets.token_urlsafe(24), group_id=runner_group_id)
        self.runners[runner.id] = runner
        self._by_name[name] = runner.id
        return JitConfig(runner.id, name, runner.secret)

    def list_runners(self, runner_group_id: int | None = None) -> list[Runner]:
        """Every runner of the org, or of one runner group (GitHub's per-group listing)."""
        self._enter("list_runners")
        return [
            Runner(r.id, r.name, "online" if r.online else "offline", r.job is not None, r.labels)
            for r in self.runners.values()
            if runner_group_id is None or r.group_id == runner_group_id
        ]

    def delete_runner(self, runner_id: int) -> None:
        self._enter("delete_runner")
        runner = self.runners.get(runner_id)
        if runner is None:
            return
        if runner.job is not None:
            raise GitHubError(422, "Bad request - Runner is currently running a job")
        del self.runners[runner_id]

    def get_job(self, repo_full_name: str, job_id: int) -> Job:
        self._enter("get_job")
        job = self.jobs.get(job_id)
        if job is None or job.repo.lower() != repo_full_name.lower():
            raise GitHubError(404, "Not Found")
        return Job(job.id, job.status, None, job.runner.name if job.runner else None, job.labels)

    # ------------------------------------------------------------------ runner groups (RunnerGroupApi)

    def list_runner_groups(self) -> list[RunnerGroupInfo]:
        self._enter("list_runner_groups")
        return [RunnerGroupInfo(g.id, g.name, "selected", bool(g.workflows), g.workflows) for g in self.groups.values()]

    def repository_ids(self) -> dict[str, int]:
        self._enter("repository_ids")
        return dict(self.repositories)

    def create_runner_group(self, name: str, repository_ids: Sequence[int], workflows: Sequence[str]) -> int:
        self._enter("create_runner_group")
        if any(g.name == name for g in self.groups.values()):
            raise GitHubError(409, "Runner group name already exists")
        group = SimGroup(next(self._group_ids), name, frozenset(repository_ids), tuple(workflows))
        self.groups[group.id] = group
        return group.id

    def update_runner_group(
        self, group_id: int, name: str, repository_ids: Sequence[int], workflows: Sequence[str]
    ) -> None:
        self._enter("update_runner_group")
        if group_id not in self.groups:
            raise GitHubError(404, "Not Found")
        self.groups[group_id] = SimGroup(group_id, name, frozenset(repository_ids), tuple(workflows))

    def watch_runner_groups(self, ids: Sequence[int]) -> None:
        """The sim lists every runner of the org already."""

    def admits(self, runner: SimRunner, job: SimJob) -> bool:
        """Whether GitHub may hand the runner this job: its group admits the job's repository (and workflow)."""
        group = self.groups.get(runner.group_id)
        if group is None:
            return True  # the organisation's own groups (Default and the like): every repository
        if self.repositories.get(job.repo) not in group.repositories:
            return False
        return not group.workflows or job.workflow_ref in group.workflows

    # ------------------------------------------------------------------ the world

    def know_repository(self, repo: str) -> int:
        """The organisation has this repository (its id; ids are handed out in order)."""
        return self.repositories.setdefault(repo, 700_000 + len(self.repositories))

    def queue_job(self, repo: str, labels: Sequence[str], workflow: str = "", workflow_ref: str = "") -> SimJob:
        self.know_repository(repo)
        job = SimJob(next(self._job_ids), repo, tuple(labels), workflow, workflow_ref, created_at=self.clock())
        self.jobs[job.id] = job
        self.emit("queued", self.payload(job))
        return job

    def boot(self, secret: str) -> bool:
        """A VM starts its runner with a JIT config: works once, only for a live registration."""
        if secret in self.used_secrets:
            return False
        for runner in self.runners.values():
            if runner.secret == secret:
                self.used_secrets.add(secret)
                runner.online = True
                return True
        return False

    def assign(self) -> list[SimJob]:
        """GitHub's dispatcher: each queued job to a random idle online runner that fits it."""
        started: list[SimJob] = []
        # The idle runners once, in id order (not every runner per queued job: a burst has thousands of each).
        idle = sorted((r for r in self.runners.values() if r.online and r.job is None), key=lambda r: r.id)
        if not idle:
            return started
        for job in sorted((j for j in self.jobs.values() if j.status == "queued"), key=lambda j: j.id):
            wanted = {label.lower() for label in job.labels}
            fits = [r for r in idle if wanted <= {label.lower() for label in r.labels} and self.admits(r, job)]
            if not fits:
                continue
            runner = self.rng.choice(fits)
            idle.remove(runner)
            runner.job, job.runner, job.status, job.started_at = job.id, runner, "in_progress", self.clock()
            job.ran_on.append(runner.name)
            self.emit("in_progress", self.payload(job))
            started.append(job)
        return started

    def complete(self, job_id: int, conclusion: str = "success") -> None:
        job = self.jobs[job_id]
        runner = job.runner
        if job.status == "completed":
            return
        job.status = "completed"
        if runner is not None:
            self.runners.pop(runner.id, None)  # ephemeral: gone after one job
        self.emit("completed", self.payload(job, conclusion))

    def payload(self, job: SimJob, conclusion: str | None = None) -> dict[str, Any]:
        owner, _, name = job.repo.partition("/")
        return {
            "action": job.status,
            "workflow_job": {
                "id": job.id,
                "run_id": job.id // 10,
                "status": job.status,
                "conclusion": conclusion,
                "labels": list(job.labels),
                "workflow_name": job.workflow or None,
                "runner_id": job.runner.id if job.runner else None,
                "runner_name": job.runner.name if job.runner else None,
                "created_at": _iso(job.created_at),
                "started_at": _iso(job.started_at) if job.started_at else None,
            },
            "repository": {"name": name, "full_name": job.repo, "owner": {"login": owner}},
            "organization": {"login": owner},
        }

    # ------------------------------------------------------------------ views for assertions

    def queued(self, labels: Sequence[str] | None = None) -> list[SimJob]:
        return [j for j in self.jobs.values() if j.status == "queued"]

    def running(self) -> list[SimJob]:
        return [j for j in self.jobs.values() if j.status == "in_progress"]
