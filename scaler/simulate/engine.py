"""Run the real agent over a job history on a virtual clock.

The agent is :class:`scaler.agent.Agent`, the same object `garo agent` runs,
with the same planner, policy and executor. Only its surroundings are
simulated: the cloud (:mod:`scaler.simulate.cloud`, timed by the latency
model), GitHub (:mod:`scaler.simulate.github`) and the subscription
(:mod:`scaler.simulate.bus`). Each history job is queued at its ``created_at``
and, once a runner takes it, runs for its recorded duration.

Instead of polling once a second as the deployed loop does, the agent is
stepped when something happens (an event on the bus, a VM or runner changing
state) and at the moments it would act on its own (its next reconcile, held
messages' re-check, JIT configs still to deliver, leases running out). A month
therefore costs a few steps per job, not 2.6 million iterations.

Only what the agent has not caused or seen wakes it. Its own deletes do not
(a VM it deleted with no job on it is no news to it). A VM that became usable
is seen at the agent's next step, at the latest when its boot agent is up: its
JIT config arriving any sooner would start its runner no sooner, so the run is
the same with a step less (busy hours have a step within the boot anyway).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import itertools
import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.agent.policy import warm_target
from scaler.config import RunnerGroup, StackConfig
from scaler.github.ratelimit import JitBudget
from scaler.github.sim import SimJob
from scaler.history.record import JobRecord
from scaler.simulate.bus import SimBus
from scaler.simulate.clock import Timeline, VirtualClock
from scaler.simulate.cloud import SimCloud, Usage
from scaler.simulate.github import HistoryGitHub
from scaler.simulate.models import LatencyModels
from scaler.simulate.tally import Tally, usage_between

log = logging.getLogger("garo.simulate")
WARM_UP = 600.0  # seconds before the first job: pools fill, the first reconcile runs
STEPS_PER_INSTANT = 8  # agent steps at one virtual instant at most (a step can set off zero-latency events)
YOUNG_COLLECTION = 20_000  # allocations between young-generation collections during a run (Python's default: 700)
NOTHING_TO_SIMULATE = "no job in the history can be simulated: none ran, or none fits a group's labels"
CLOUD_MODELS = {"gcp": "gce", "aws": "ec2", "local": "gce"}


@dataclass(frozen=True)
class Options:
    seed: int = 1
    jit_per_minute: int = 180  # GitHub's JIT config budget
    cloud_model: str | None = None  # latency model name; default from garo:cloud
    keep_log: bool = False  # keep the (time, event, name) log (agreement tests)
    drain: float = 1800.0  # seconds simulated after the last job ends (teardown, pool trims)
    split: bool = True  # a long history in pieces (scaler.simulate.pieces); False: in one
    piece_jobs: int = 2000  # jobs a piece has at least
    workers: int | None = None  # processes for the pieces (None: one per core); never changes the figures


@dataclass
class JobOutcome:
    id: int
    group: str
    created: float
    started: float | None
    duration: float
    ran_on: str | None
    stolen: bool
    failed: bool  # its VM went away under it (spot preemption)
    repository: str = ""  # for the priority class (garo:priorities)


@dataclass
class RunResult:
    """Everything one simulation measured; :mod:`scaler.simulate.report` turns it into figures."""

    config: StackConfig
    start: float
    end: float
    jobs: list[JobOutcome]
    usage: Usage
    github_calls: dict[str, int]
    jit_times: list[float]
    jit_per_minute: int
    jit_refused: int
    unrouted: int
    warm_seconds: dict[str, float]
    steps: int
    vm_log: list[tuple[float, str, str]] = field(default_factory=list)
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (time, action, job id) GitHub sent
    pieces: int = 1  # the history was simulated in this many pieces (scaler.simulate.pieces)
    replayed: int = 0  # jobs in flight where a piece began, replayed there (counted by the piece before)
    request_times: list[float] = field(default_factory=list)  # each request GitHub served (pages each)
    unchanged_times: list[float] = field(default_factory=list)  # those repeating an unchanged listing (304s)


def route(groups: Sequence[RunnerGroup], record: JobRecord) -> RunnerGroup | None:
    """The group whose runners can take the job: GitHub's rule (the runner's labels cover ``runs-on``)."""
    if record.group is not None and not record.labels:
        return next((g for g in groups if g.name == record.group), None)
    wanted = {label.lower() for label in record.labels}
    fits = [g for g in groups if wanted <= {label.lower() for label in g.labels}]
    return min(fits, key=lambda g: len(g.labels)) if fits else None


Routed = tuple[JobRecord, RunnerGroup]


def route_all(groups: Sequence[RunnerGroup], records: Sequence[JobRecord]) -> tuple[list[Routed], int]:
    """The jobs that can be simulated with their groups, in order of creation; and how many cannot."""
    routed: list[Routed] = []
    unrouted = 0
    for record in records:
        group = route(groups, record)
        if group is None or record.started_at is None or record.completed_at is None:
            unrouted += 1
            continue
        routed.append((record, group))
    routed.sort(key=lambda rg: (rg[0].created_at, rg[0].id))
    return routed, unrouted


def epoch(value: datetime) -> float:
    """Seconds since the epoch: the virtual clock's unit."""
    return value.timestamp()


class Simulation:
    def __init__(self, config: StackConfig, models: LatencyModels, options: Options = Options()) -> None:
        if config.kind != "department":
            raise ValueError("simulate a department stack, not the hub")
        self.config = config
        self.options = options
        self.rng = random.Random(options.seed)
        self.clock = VirtualClock(0.0)
        self.timeline = Timeline(self.clock)
        self.bus = SimBus(self.clock)
        self.budget = JitBudget(options.jit_per_minute, clock=self.clock)
        self.github = HistoryGitHub(
            self.clock, self._emit, random.Random(self.rng.random()), self.budget, on_start=self._job_started,
            listed_groups=config.listed_runner_groups,
        )  # fmt: skip
        cloud_name = options.cloud_model or CLOUD_MODELS.get(config.cloud, config.cloud)
        self.cloud = SimCloud(
            config,
            models.cloud(cloud_name),
            models.runner_startup,
            self.clock,
            self.timeline,
            random.Random(self.rng.random()),
            on_runner_start=self._runner_start,
            on_vm_lost=self._vm_lost,
            on_change=self._cloud_changed,
            keep_log=options.keep_log,
        )
        self.agent = Agent(
            config,
            self.cloud,
            self.github,
            self.bus,
            clock=self.clock,
            registry=CollectorRegistry(),
            jit_budget=self.budget,
        )
        self.group_of_job: dict[int, str] = {}
        self.duration: dict[int, float] = {}
        self.failed: set[int] = set()
        self.events: list[tuple[float, str, int]] = []
        self.steps = 0
        self._dirty = True
        self._stepping = False  # inside the agent's step: what it does itself is no news to it
        self._look_by: list[float] = []  # when the agent must step for VMs usable since its last step
        self._owes_jit = False  # after its last step, a usable VM still waits for its JIT config (budget)

    # ------------------------------------------------------------------ the world's reactions

    def _emit(self, action: str, payload: dict[str, object]) -> None:
        job = payload["workflow_job"]
        assert isinstance(job, dict)
        self.bus.publish_event(self.config.department, self.group_of_job[int(job["id"])], action, dict(payload))
        self.events.append((self.clock.now, action, int(job["id"])))
        self._dirty = True

    def _runner_start(self, secret: str) -> None:
        self.github.boot(secret)
        self._dirty = True

    def _cloud_changed(self, look_by: float | None) -> None:
        # A VM that became usable gets its JIT config at the agent's next step, at the latest when
        # its boot agent is up (sooner would start its runner no sooner); freed quota matters only
        # to jobs still held.
        if look_by is not None and look_by > self.clock.now:
            heapq.heappush(self._look_by, look_by)
        elif look_by is not None or self.agent.held:
            self._dirty = True

    def _vm_lost(self, name: str) -> None:
        job = self.github.lose_runner(name)
        if job is not None:
            self.failed.add(job.id)
            self._dirty = True
        elif not self._stepping:
            self._dirty = True  # preempted: a VM the agent counted on is gone
        # A VM the agent itself just deleted with no job on it changes nothing it has not seen.

    def _job_started(self, job: SimJob) -> None:
        runner = job.runner
        assert runner is not None
        name, group = runner.name, self.group_of_job[job.id]

        def done() -> None:
            if self.github.jobs[job.id].status == "in_progress":
                self.github.complete(job.id)
                self.cloud.finish(group, name)

        self.timeline.at(self.clock.now + self.duration[job.id], done)

    def _queue(self, record: JobRecord, group: RunnerGroup) -> None:
        labels = record.labels or group.labels
        self.github.queue_history_job(record.id, record.repository, labels)

    # ------------------------------------------------------------------ running

    def _agent_due(self, last_step: float) -> float:
        agent = self.agent
        due = agent.next_reconcile
        if agent.held:
            due = min(due, last_step + agent.hold_refresh)
        if self._look_by:
            due = min(due, self._look_by[0])
        if self._owes_jit:
            due = min(due, last_step + 1.0)  # not delivered (budget): the deployed loop comes round each second
        lease = self.bus.next_lease_end()
        if lease is not None:
            due = min(due, lease)
        return max(due, self.clock.now)

    def run_routed(
        self,
        routed: Sequence[Routed],
        unrouted: int = 0,
        until: float | None = None,
        repositories: Iterable[str] = (),
        lead_in: Sequence[Routed] = (),
        begins: float | None = None,
    ) -> RunResult:
        """Simulate jobs already routed, in order of creation.

        A piece of a longer history (:mod:`scaler.simulate.pieces`) counts only
        its window, from ``begins`` to ``until``: it first replays ``lead_in``,
        the earlier jobs still in flight where it begins (counted by the piece
        before), and it stops at ``until`` (once every job has completed), not
        ``drain`` after the last job. ``repositories`` names the whole history's
        (the organisation's, beyond this piece's).
        """
        if not routed:
            raise ValueError(NOTHING_TO_SIMULATE)
        everything = [*lead_in, *routed]
        start = min(epoch(record.created_at) for record, _ in everything) - WARM_UP
        self.clock.now = start
        tallies: list[Tally] = []
        if begins is None:
            tallies.append(self._tally())  # a whole run counts its standby pools' VMs as created
        else:  # scheduled before the jobs queued at the same instant, so that the window counts them
            self.timeline.at(begins, lambda: tallies.append(self._tally()))
        self.cloud.begin()
        # The organisation's repositories, for the priority classes' runner groups.
        for repository in itertools.chain(repositories, (record.repository for record, _ in everything)):
            self.github.know_repository(repository)
        if until is not None:
            self.timeline.at(until, lambda: tallies.append(self._tally()))
        for record, group in everything:
            ran = record.duration
            assert ran is not None  # routed jobs ran (route_all)
            self.group_of_job[record.id] = group.name
            self.duration[record.id] = ran.total_seconds()
            self.timeline.at(epoch(record.created_at), functools.partial(self._queue, record, group))
        last_end = max(epoch(r.created_at) + self.duration[r.id] for r, _ in everything)
        agent_log = logging.getLogger("garo.agent")
        level = agent_log.level
        agent_log.setLevel(logging.ERROR)  # a month of "capacity requested" lines helps nobody
        try:
            with _long_lived_heap():
                drained = last_end + self.options.drain
                if until is None:
                    self._loop(drained, drained)
                else:  # a job still waiting then is not cut short (as far as a whole run would go on)
                    self._loop(until, max(until + self.options.drain, drained))
        finally:
            agent_log.setLevel(level)
        if until is None:
            tallies.append(self._tally())
        return self._result(routed, tallies[0], tallies[1], unrouted, len(lead_in))

    def _tally(self) -> Tally:
        self.cloud.bill_to_now()
        github = self.github
        return Tally.of(
            self.clock.now, self.cloud.usage, github.calls, github.jit_refused, len(github.jit_times), self.steps,
            len(self.events), len(github.request_times), len(github.unchanged_times),
        )  # fmt: skip

    def _loop(self, stop_after: float, stop_at_latest: float) -> None:
        """Step until ``stop_after`` once every job is over, or until ``stop_at_latest`` in any case."""
        last_step = self.clock.now
        while True:
            next_event = self.timeline.next_time()
            due = self._agent_due(last_step)
            now = min(due, next_event) if next_event is not None else due
            if now > stop_after and (next_event is None or next_event > stop_after):
                if self._all_completed():
                    self.clock.now = max(self.clock.now, stop_after)
                    break
                if now > stop_at_latest:  # a job that can never start (e.g. max 0) must not keep the run going
                    self.clock.now = max(self.clock.now, stop_at_latest)
                    break
            self.clock.now = now
            for _ in range(STEPS_PER_INSTANT):
                self.timeline.run_due()
                self.github.assign()
                if not self._dirty and now < due:
                    break
                self._dirty = False
                self._stepping = True
                try:
                    self.agent.step()
                finally:
                    self._stepping = False
                self._look_by.clear()  # the step saw every VM usable by now
                pending = self.agent.book.pending_jit
                self._owes_jit = bool(pending) and self.cloud.ready_without_jit(pending)
                self.steps += 1
                last_step, due = now, float("inf")
                nxt = self.timeline.next_time()
                if not self._dirty and (nxt is None or nxt > now):
                    break

    def _all_completed(self) -> bool:
        """Every job queued so far is over (a job still waiting at the end of a piece is not cut short)."""
        return all(job.status == "completed" for job in self.github.jobs.values())

    # ------------------------------------------------------------------ result

    def _result(self, routed: Sequence[Routed], first: Tally, last: Tally, unrouted: int, replayed: int) -> RunResult:
        """The run's figures between two tallies (its whole length, or a piece's window)."""
        department = self.config.department
        names = [g.name for g in self.config.groups]
        outcomes: list[JobOutcome] = []
        for record, group in routed:
            job = self.github.jobs.get(record.id)
            ran_on = job.ran_on[0] if job is not None and job.ran_on else None
            parsed = naming.parse_name(department, names, ran_on) if ran_on else None
            stolen = parsed is not None and parsed.job_id is not None and parsed.job_id != record.id
            outcomes.append(
                JobOutcome(
                    record.id,
                    group.name,
                    epoch(record.created_at),
                    job.started_at if job is not None else None,
                    self.duration[record.id],
                    ran_on,
                    stolen,
                    record.id in self.failed,
                    record.repository,
                )
            )
        start, end = first.at, last.at
        usage = usage_between(self.cloud.usage, first, last)
        return RunResult(
            config=self.config,
            start=start,
            end=end,
            jobs=outcomes,
            usage=usage,
            github_calls=dict(last.github_calls - first.github_calls),
            jit_times=self.github.jit_times[first.jit_times : last.jit_times],
            request_times=self.github.request_times[first.requests : last.requests],
            unchanged_times=self.github.unchanged_times[first.unchanged : last.unchanged],
            jit_per_minute=self.options.jit_per_minute,
            jit_refused=last.jit_refused - first.jit_refused,
            unrouted=unrouted,
            warm_seconds={g.name: _warm_seconds(g, start, end) for g in self.config.groups},
            steps=last.steps - first.steps,
            vm_log=list(usage.log),
            events=self.events[first.events : last.events],
            replayed=replayed,
        )


@contextlib.contextmanager
def _long_lived_heap() -> Iterator[None]:
    """Keep the cyclic garbage collector off what lives for the whole run.

    The history, its timeline and the simulated cloud and GitHub live until the
    end; each full collection walked them all again (a growing share of a
    month's run). They are frozen out of its reach, and the young generation
    is collected less often: the agent's per-step garbage is freed by
    reference counting anyway. No effect on what is simulated.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], YOUNG_COLLECTION), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _warm_seconds(group: RunnerGroup, start: float, end: float) -> float:
    """The configured warm pool integrated over the run (minute by minute when it follows a schedule)."""
    if group.warm_pool.schedule is None:
        return group.warm_pool.size * (end - start)
    total, t = 0.0, start
    while t < end:
        step = min(60.0, end - t)
        total += warm_target(group.warm_pool, t) * step
        t += step
    return total
