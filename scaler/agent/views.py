"""What a snapshot of the cloud and GitHub, read against the book, says about a group.

Pure functions: no call leaves the process and nothing is written, so the
planner can derive the same view as often as it likes (and a dry run is free).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from scaler import naming
from scaler.agent.state import Book, JobRecord
from scaler.backends.base import STATE_LABEL, Instance, InstanceState
from scaler.github.models import Runner

ACTIVE = frozenset({InstanceState.CREATING, InstanceState.RUNNING, InstanceState.RESUMING})
STANDBY = InstanceState.STANDBY  # looked up once: ``view`` compares every VM's state with it
REPORTED_OVER = ("done", "failed")  # what the boot agent reports once its one job is over
# Seconds a generated JIT config may take to show in GitHub's runner listing: a runner missing
# from a listing taken sooner says nothing about whether it came and went.
LISTING_LAG = 30.0
# naming.job_of, cached: the planner asks it of every VM name on every batch, and a name's job never changes.
job_of = functools.lru_cache(maxsize=65536)(naming.job_of)


@dataclass(frozen=True)
class Snapshot:
    """Runners (ours, by name; None if GitHub could not be read) and instances per group.

    A group whose VMs could not be listed is missing from ``instances``: act on it next time.
    """

    runners: Mapping[str, Runner] | None
    instances: Mapping[str, Mapping[str, Instance]] = field(default_factory=dict)
    # When GitHub listed the runners (-inf: unknown). A JIT config generated before then would show.
    runners_at: float = float("-inf")
    # VMs that asked this agent's JIT vault for a config lately and got none (None: the backend
    # has no vault, e.g. the local fleet). The one sign that a VM this agent did not make needs one.
    asking: frozenset[str] | None = None

    def runner(self, name: str) -> Runner | None:
        return self.runners.get(name) if self.runners is not None else None


@dataclass(frozen=True)
class GroupView:
    """Counts the capacity policy needs, derived from a snapshot and the book."""

    active: tuple[Instance, ...]
    standby: tuple[Instance, ...]
    busy: frozenset[str]
    queued: tuple[JobRecord, ...]
    own: dict[int, str]  # queued job -> its own idle VM
    # VMs made for a job that have not registered yet and are not some queued
    # job's own VM: each stands for a job whose message was already acknowledged.
    reserved: frozenset[str] = frozenset()
    # VMs whose job is over, waiting to be deleted: they hold quota but no capacity.
    finished: frozenset[str] = frozenset()
    # Jobs acknowledged on spare capacity (``covered``) with no VM named after them: each still
    # counts on one spare VM until it starts, so a second job cannot count on the same one.
    on_spare: frozenset[int] = frozenset()

    @property
    def demand(self) -> int:
        """Jobs waiting for a runner, as the capacity policy counts them."""
        return len(self.queued) + len(self.reserved) + len(self.on_spare)

    @property
    def spare(self) -> int:
        """Active VMs not busy and not spoken for by a job."""
        return len(self.active) - len(self.busy) - len(self.own) - len(self.reserved) - len(self.on_spare)


def finished(book: Book, inst: Instance, snap: Snapshot) -> bool:
    """The VM's one job is over (it says so, or its runner came and went); it only awaits deletion.

    A VM we think runs a job is not finished just because its runner is missing
    from one listing (pages shift as runners come and go): only once GitHub's
    answer about that job (recorded in the book) says it no longer runs there.
    """
    if inst.labels.get(STATE_LABEL) in REPORTED_OVER:
        return True
    if snap.runners is None or snap.runner(inst.name) is not None:
        return False
    # Its runner existed: this agent saw it listed, or a JIT config was generated for it (by
    # this agent, or by another replica: GitHub's 409). A JIT runner is listed from the moment
    # its config exists until its one job is over, so its absence now means it came and went.
    seen = book.registered.get(inst.name, float("-inf"))
    configured = book.delivered.get(inst.name)
    if configured is not None and configured < snap.runners_at - LISTING_LAG:
        seen = max(seen, configured)
    if seen < inst.created_at:
        return False  # never registered, or only an earlier VM of that name was
    return inst.name not in book.running_on()


def github_says_over(book: Book, inst: Instance) -> bool:
    """GitHub (an answer or a believed ``completed``) says the job that ran on this very VM is over.

    Learnt after the VM was created, so it is not about an earlier VM of a reused name.
    """
    return book.names_a_job(inst.name) and any(
        j.status == "completed" and j.runner_name == inst.name and j.seen_at >= inst.created_at
        for j in book.jobs.values()
    )


def spent_names(book: Book, group: str, snap: Snapshot) -> set[str]:
    """Names never to give a new VM: they ran a job, or GitHub still has their runner without a VM.

    Reusing such a name would let a late ``completed`` event of the job that
    ran on the old VM delete the new one, and GitHub refuses a JIT config for
    a name that is still registered (409).
    """
    spent = book.runner_names() | set(book.spent)
    if snap.runners is not None:
        spent |= {name for name in snap.runners if name not in snap.instances[group]}
    return spent


def view(department: str, book: Book, group: str, snap: Snapshot) -> GroupView:
    # The planner derives this on every batch, so it is written for speed: one pass over the VMs for
    # their states, finished ones and busy ones, names parsed once through a cache (``job_of``), dict
    # and set lookups rather than helper calls. Same answers as the helpers above (``finished``,
    # ``Snapshot.runner``, ``naming.job_of``).
    instances = snap.instances[group].values()
    runners = snap.runners
    registered, delivered, running_on = book.registered, book.delivered, book.running_on()
    named, spent, jobs = book.job_runner_names, book.spent, book.jobs
    lag_before = snap.runners_at - LISTING_LAG

    active_list: list[Instance] = []
    standby_list: list[Instance] = []
    over_names: set[str] = set()
    busy: set[str] = set()
    idle: list[tuple[Instance, str, int | None]] = []  # active, not busy: (VM, name, the job it is named after)
    for i in instances:
        state = i.state
        if state is STANDBY:
            standby_list.append(i)
            continue
        if state not in ACTIVE:
            continue
        name = i.name
        # finished(), inlined: a VM reporting its job over; else a runner that came and went.
        if i.labels.get(STATE_LABEL) in REPORTED_OVER:
            over_names.add(name)
            continue
        runner = None
        if runners is not None:
            runner = runners.get(name)
            if runner is None:
                seen = registered.get(name, float("-inf"))
                configured = delivered.get(name)
                if configured is not None and configured < lag_before:
                    seen = max(seen, configured)
                if seen >= i.created_at and name not in running_on:
                    over_names.add(name)
                    continue
        active_list.append(i)
        if (runner is not None and runner.busy) or (name in running_on and (runners is None or runner is not None)):
            busy.add(name)
        else:
            idle.append((i, name, job_of(department, group, name)))
    queued = tuple(book.queued(group))
    own: dict[int, str] = {}
    if queued:
        # A job's own VM: any idle VM named after it (generations need not be contiguous: some were
        # deleted, some ran another job and are spent); the first name in order if it has several.
        # Spent names (spent_names: a runner GitHub lists without a VM is never one of these idle VMs).
        idle_for: dict[int, str] = {}
        for _, name, job_id in idle:
            if job_id is None or name in named or name in spent:
                continue
            if job_id not in idle_for or name < idle_for[job_id]:
                idle_for[job_id] = name
        own = {job.id: idle_for[job.id] for job in queued if job.id in idle_for}
    own_names = set(own.values())
    reserved = set()
    for inst, name, job_id in idle:
        if job_id is None or name in own_names:
            continue
        record = jobs.get(job_id)
        if record is not None and record.status in ("in_progress", "completed"):
            continue
        # A JIT runner is listed (offline) from the moment its config is generated: only an
        # online runner means the VM has booted and GitHub may hand it any job.
        runner = runners.get(name) if runners is not None else None
        online = runner.status == "online" if runner is not None else runners is None and name in registered
        if not online and inst.labels.get(STATE_LABEL) not in REPORTED_OVER:
            reserved.add(name)
    # A job with a VM named after it that no other job used counts on that VM (on its way, idle,
    # or already running or done with the job), not on spare capacity.
    on_spare: frozenset[int] = frozenset()
    covered_jobs = book.covered(group)
    if covered_jobs:
        named_for = {
            job_of(department, group, i.name) for i in instances if i.name not in spent and i.name not in named
        }
        on_spare = frozenset(j.id for j in covered_jobs if j.id not in named_for)
    return GroupView(
        tuple(active_list),
        tuple(standby_list),
        frozenset(busy),
        queued,
        own,
        frozenset(reserved),
        frozenset(over_names),
        on_spare,
    )


def covered(group_view: GroupView) -> dict[int, str | None]:
    """Queued jobs that have a VM to run on: their own idle VM, else the oldest get the spare ones."""
    others = [j.id for j in group_view.queued if j.id not in group_view.own]
    result: dict[int, str | None] = dict(group_view.own)
    result.update((job_id, None) for job_id in others[: max(0, group_view.spare)])
    return result
