"""The simulated GitHub for `garo simulate`: scaler/github/sim.py's behaviour, indexed for a month of jobs.

:class:`~scaler.github.sim.GitHubSim` already behaves like GitHub for the
agent (single-use JIT configs, 409 on a taken name, any idle runner whose
labels fit and whose runner group admits the job's repository takes a queued
job, so jobs get stolen unless the priority classes have runner groups). Its dispatcher looks at
every job ever queued; here only the queued ones are looked at, jobs keep
their history ids and run for their recorded durations, and every JIT config
generated is timed for the budget report. So is every request GitHub would
serve (a listing's every page), for the installation's hourly limit.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from scaler.github.client import PER_PAGE
from scaler.github.models import GitHubError, JitConfig, Runner
from scaler.github.ratelimit import JitBudget
from scaler.github.sim import GitHubSim, SimJob


@functools.lru_cache(maxsize=1024)
def _lowered(labels: tuple[str, ...]) -> frozenset[str]:
    """A label tuple as GitHub matches it (case-insensitively); the dispatcher asks on every try."""
    return frozenset(label.lower() for label in labels)


class HistoryGitHub(GitHubSim):
    def __init__(
        self,
        clock: Callable[[], float],
        emit: Callable[[str, dict[str, Any]], None],
        rng: random.Random,
        budget: JitBudget,
        on_start: Callable[[SimJob], None],
        listed_groups: Sequence[int] = (),
    ) -> None:
        """``listed_groups``: the runner groups the agent's client lists one by one (none: one listing of all)."""
        super().__init__(clock, emit, rng)
        self.listed_groups = tuple(dict.fromkeys(listed_groups))
        self.budget = budget
        self.on_start = on_start
        self.waiting: dict[int, SimJob] = {}  # queued jobs by id (ids grow with time, so dict order is queue order)
        self.jit_times: list[float] = []
        # When each request was made, as GitHub counts them against the installation's hourly limit:
        # one per call, one per page of a runner listing, a refused JIT request too.
        self.request_times: list[float] = []
        # Those of them that repeat a listing unchanged since the agent's last: the client asks for each
        # page on condition (If-None-Match), and GitHub does not count a 304 against the hourly limit.
        self.unchanged_times: list[float] = []
        self.jit_refused = 0  # generate calls beyond the budget (GitHub's 429); the agent should never make any
        # The organisation's runner listing until a runner changes: the agent lists on most of its steps.
        self._listing: list[Runner] | None = None
        self._listing_requests = 1  # the requests the client makes for that listing (each group's pages)
        # Each runner's listing entry and the (online, busy) it shows: a new listing rebuilds only the
        # entries of runners that changed (a month of steps would otherwise build millions of them).
        self._entries: dict[int, tuple[bool, bool, Runner]] = {}
        # Whether a job was queued, a runner came online or a runner group changed since the last
        # dispatch: nothing else lets a waiting job start, and the engine dispatches on every step.
        self._dispatch = True

    def queue_history_job(self, job_id: int, repo: str, labels: Sequence[str]) -> SimJob:
        self.know_repository(repo)
        job = SimJob(job_id, repo, tuple(labels), created_at=self.clock())
        self.jobs[job.id] = job
        self.waiting[job.id] = job
        self._dispatch = True
        self.emit("queued", self.payload(job))
        return job

    def _enter(self, method: str) -> None:
        self.request_times.append(self.clock())
        super()._enter(method)

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        if self.budget.try_acquire() > 0:
            self._enter("generate_jit_config")  # a refused request is counted like any other
            self.jit_refused += 1
            raise GitHubError(429, "simulated: JIT config rate limit")
        config = super().generate_jit_config(name, runner_group_id, labels)
        self._listing = None
        self.jit_times.append(self.clock())
        return config

    def list_runners(self, runner_group_id: int | None = None) -> list[Runner]:
        if runner_group_id is not None:
            return super().list_runners(runner_group_id)
        self._enter("list_runners")
        unchanged = self._listing is not None
        if self._listing is None:
            entries, listing = self._entries, []
            for r in self.runners.values():
                online, busy = r.online, r.job is not None
                cached = entries.get(r.id)
                if cached is None or cached[0] is not online or cached[1] is not busy:
                    cached = entries[r.id] = (
                        online,
                        busy,
                        Runner(r.id, r.name, "online" if online else "offline", busy, r.labels),
                    )
                listing.append(cached[2])
            if len(entries) > 2 * len(listing):  # forget the runners that are gone
                self._entries = {r.id: entries[r.id] for r in listing}
            self._listing = listing
            self._listing_requests = self._pages()
        # The first request was counted above (``_enter``).
        now = self.clock()
        self.request_times.extend(itertools.repeat(now, self._listing_requests - 1))
        if unchanged:  # every page as it was (a runner more or less changes every page: each has total_count)
            self.unchanged_times.extend(itertools.repeat(now, self._listing_requests))
        return list(self._listing)

    def _pages(self) -> int:
        """Requests GitHubClient.list_runners makes: each listed runner group's pages (PER_PAGE runners a page)."""
        if not self.listed_groups:
            return max(1, math.ceil(len(self.runners) / PER_PAGE))
        per_group = Counter(r.group_id for r in self.runners.values())
        return sum(max(1, math.ceil(per_group[group] / PER_PAGE)) for group in self.listed_groups)

    def delete_runner(self, runner_id: int) -> None:
        self._listing = None
        super().delete_runner(runner_id)

    def boot(self, secret: str) -> bool:
        self._listing = None
        self._dispatch = True
        return super().boot(secret)

    def create_runner_group(self, name: str, repository_ids: Sequence[int], workflows: Sequence[str]) -> int:
        self._dispatch = True
        return super().create_runner_group(name, repository_ids, workflows)

    def update_runner_group(
        self, group_id: int, name: str, repository_ids: Sequence[int], workflows: Sequence[str]
    ) -> None:
        self._dispatch = True
        super().update_runner_group(group_id, name, repository_ids, workflows)

    def complete(self, job_id: int, conclusion: str = "success") -> None:
        self._listing = None
        super().complete(job_id, conclusion)

    def assign(self) -> list[SimJob]:
        """GitHub's dispatcher over the queued jobs only: each to a random idle online runner that fits."""
        if not self.waiting or not self._dispatch:
            return []
        self._dispatch = False
        idle = sorted((r for r in self.runners.values() if r.online and r.job is None), key=lambda r: r.id)
        started: list[SimJob] = []
        for job in list(self.waiting.values()):
            if not idle:
                break
            wanted = _lowered(job.labels)
            fits = [r for r in idle if wanted <= _lowered(r.labels) and self.admits(r, job)]
            if not fits:
                continue
            runner = self.rng.choice(fits)
            idle.remove(runner)
            del self.waiting[job.id]
            runner.job, job.runner, job.status, job.started_at = job.id, runner, "in_progress", self.clock()
            self._listing = None
            job.ran_on.append(runner.name)
            self.emit("in_progress", self.payload(job))
            started.append(job)
            self.on_start(job)
        return started

    def lose_runner(self, name: str) -> SimJob | None:
        """The runner's VM is gone: it goes offline, and the job it ran fails (GitHub: lost communication)."""
        self._listing = None
        for runner in list(self.runners.values()):
            if runner.name != name:
                continue
            runner.online = False
            if runner.job is not None:
                job = self.jobs[runner.job]
                self.complete(job.id, "failure")
                return job
        return None
