"""What one agent process remembers between passes, and why losing it is fine.

There is no database: the cloud (instances), GitHub (runners, jobs) and the
subscription (unacknowledged messages) are the truth. This book only speeds
things up and holds what cannot be re-read cheaply: which jobs are still queued
(from events), which VM got its JIT config, and the "first seen" marks that make
reconcile confirm a deletion over two passes. After a restart it starts empty:
unacknowledged messages are redelivered and marks need two fresh observations.

The planner reads the book and never writes it; the executor changes it, and
only after the cloud or GitHub confirmed the change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# A job's status only moves forward, so a reordered or duplicated event can
# never bring a finished job back. "covered" is ours: its queued message was
# acknowledged because capacity for it exists (after that the VM carries it).
_ORDER = {"queued": 0, "waiting": 0, "covered": 1, "in_progress": 2, "completed": 3}
_KEEP_FINISHED = 3600.0
# What GitHub calls a job that still waits for a runner.
WAITING_STATUSES = frozenset({"queued", "pending", "requested"})


@dataclass
class JobRecord:
    id: int
    group: str
    repo: str
    status: str
    seen_at: float
    runner_name: str | None = None
    first_seen: float = 0.0  # when this agent first heard of the job (seen_at moves on each event)
    workflow: str = ""  # its workflow's name (from the event), for its priority class


def _clone(record: JobRecord) -> JobRecord:
    """A copy of a record (its fields are immutable values): planning copies the book on every pass,
    and ``dataclasses.replace`` made that the agent's hottest line (`garo simulate` profiles)."""
    clone = object.__new__(JobRecord)
    clone.__dict__.update(record.__dict__)
    return clone


@dataclass(frozen=True)
class Sighting:
    """One reconcile pass's view of a VM it would delete: when, on which runner listing, and why.

    ``listing`` is the time of the GitHub runner listing the pass judged on;
    ``over``: the VM's one job was over (its runner came and went), as
    opposed to idle, offline, never registered, ...
    """

    at: float
    listing: float
    over: bool = False


@dataclass
class Book:
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    # instance name -> group, for VMs that exist but still need their JIT config
    pending_jit: dict[str, str] = field(default_factory=dict)
    # instance name -> when its JIT config was written to its metadata
    delivered: dict[str, float] = field(default_factory=dict)
    # instance name -> when we last saw its runner registered on GitHub (a name can be reused:
    # a runner seen before a VM of that name was created says nothing about that VM)
    registered: dict[str, float] = field(default_factory=dict)
    # instance names whose used JIT config we removed from their metadata
    jit_cleared: set[str] = field(default_factory=set)
    # busy VMs already checked for a stolen job (one GitHub question each)
    stolen_checked: set[str] = field(default_factory=set)
    # deletion candidates: key -> reconcile pass number that first saw it
    marks: dict[str, int] = field(default_factory=dict)
    # VM deletion candidates: key -> the pass's view at the first sighting (see confirmed)
    sightings: dict[str, Sighting] = field(default_factory=dict)
    # reconcile passes carried out (dry runs do not count)
    passes: int = 0
    # VM names that ran a job other than their own -> when we learnt it (never reused)
    spent: dict[str, float] = field(default_factory=dict)
    # Job ids whose records this book shares with a copy of it (or with the book it was copied from):
    # copy-on-write, so planning, which copies the book on every pass, does not copy an hour of jobs.
    shared: set[int] = field(default_factory=set, repr=False, compare=False)

    def copy(self) -> Book:
        """An independent copy: the planner's scratch book, so planning never changes this one."""
        self.shared = set(self.jobs)
        return Book(
            jobs=dict(self.jobs),
            shared=set(self.jobs),
            pending_jit=dict(self.pending_jit),
            delivered=dict(self.delivered),
            registered=dict(self.registered),
            jit_cleared=set(self.jit_cleared),
            stolen_checked=set(self.stolen_checked),
            marks=dict(self.marks),
            sightings=dict(self.sightings),
            passes=self.passes,
            spent=dict(self.spent),
        )

    def observe_job(
        self,
        job_id: int,
        group: str,
        repo: str,
        status: str,
        now: float,
        runner_name: str | None = None,
        workflow: str = "",
    ) -> JobRecord:
        """Record an event's view of a job; older views never overwrite newer ones."""
        record = self._own(job_id)
        if record is None:
            record = JobRecord(job_id, group, repo, status, now, runner_name, first_seen=now, workflow=workflow)
            self.jobs[job_id] = record
            return record
        if _ORDER.get(status, 0) >= _ORDER.get(record.status, 0):
            record.status = status if status != "waiting" or record.status != "queued" else "queued"
            record.runner_name = runner_name or record.runner_name
            record.seen_at = now
        if repo and not record.repo:
            record.repo = repo
        if workflow and not record.workflow:
            record.workflow = workflow
        return record

    def learn(self, job_id: int, group: str, repo: str, status: str, now: float, runner_name: str | None) -> None:
        """Record what GitHub answered about a job; one that still waits counts as queued again."""
        status = "queued" if status in WAITING_STATUSES else status
        self.observe_job(job_id, group, repo, status, now, runner_name)
        if status == "queued":
            self.requeue(job_id, now)

    def saw_runners(self, names: frozenset[str] | set[str], now: float) -> None:
        """GitHub lists these runners now: each of those VMs has its config, from us or another replica.

        A config still pending here is dropped: generated after the runner's one
        job is over, it would leave a used VM waiting with an offline runner.
        """
        self.registered.update(dict.fromkeys(names, now))
        for name in names:
            if self.pending_jit.pop(name, None) is not None:
                self.delivered.setdefault(name, now)

    def queued(self, group: str) -> list[JobRecord]:
        """Jobs of a group still waiting for a runner, oldest first.

        A ``waiting`` job is blocked on an environment's approval and may stay so
        for hours: it gets capacity when GitHub queues it, not before.
        """
        jobs = [j for j in self.jobs.values() if j.group == group and j.status == "queued"]
        return sorted(jobs, key=lambda j: (j.seen_at, j.id))

    def cover(self, job_id: int) -> None:
        record = self._own(job_id)
        if record is not None and record.status == "queued":
            record.status = "covered"

    def requeue(self, job_id: int, now: float) -> None:
        """GitHub says the job still waits although its capacity is gone (replaced VM)."""
        record = self._own(job_id)
        if record is not None and record.status in ("queued", "covered"):
            record.status, record.seen_at = "queued", now
        elif record is not None and record.status == "in_progress" and record.runner_name is None:
            record.status, record.seen_at = "queued", now

    def running_on(self) -> dict[str, int]:
        """Runner name -> job id for jobs known to be in progress."""
        return {j.runner_name: j.id for j in self.jobs.values() if j.status == "in_progress" and j.runner_name}

    def finished(self, job_id: int) -> bool:
        record = self.jobs.get(job_id)
        return record is not None and record.status == "completed"

    def prune(self, now: float) -> None:
        """Forget finished jobs after an hour; a duplicate that late is harmless (reconcile trims)."""
        for job_id in [
            j.id for j in self.jobs.values() if j.status == "completed" and now - j.seen_at > _KEEP_FINISHED
        ]:
            del self.jobs[job_id]
        for name in [name for name, when in self.spent.items() if now - when > _KEEP_FINISHED]:
            del self.spent[name]

    def forget_instance(self, name: str) -> None:
        """The VM is deleted: forget it, and a job running on it is over (or lost with it)."""
        self.pending_jit.pop(name, None)
        self.delivered.pop(name, None)
        self.registered.pop(name, None)
        self.stolen_checked.discard(name)
        self.jit_cleared.discard(name)
        for job_id in [j.id for j in self.jobs.values() if j.status == "in_progress" and j.runner_name == name]:
            record = self._own(job_id)
            assert record is not None
            record.status = "completed"

    def _own(self, job_id: int) -> JobRecord | None:
        """The job's record, made this book's own before it is changed (see ``shared``)."""
        record = self.jobs.get(job_id)
        if record is not None and job_id in self.shared:
            self.shared.discard(job_id)
            record = self.jobs[job_id] = _clone(record)
        return record

    def confirmed(self, key: str, sighting: Sighting | None = None, min_age: float = 0.0) -> bool:
        """Was this deletion candidate already seen by an earlier pass (the one before this), long enough ago?

        A VM whose job is over in both sightings is confirmed by the next pass,
        however soon, as long as it judged on a newer runner listing: two
        listings, never one read twice. Any other candidate (idle beyond the
        warm pool, offline, never registered) must have been a candidate for
        ``min_age`` seconds: a quick pass that confirms finished VMs must not
        trim an idle VM the next queued job would have taken.
        """
        first = self.marks.get(key)
        if first is None or first > self.passes:
            return False
        before = self.sightings.get(key)
        if sighting is None or before is None:
            return True
        if before.over and sighting.over:
            return sighting.listing > before.listing
        return sighting.at - before.at >= min_age

    def end_pass(self, seen: set[str] | frozenset[str], sightings: Mapping[str, Sighting] | None = None) -> None:
        """A reconcile pass is done: mark what it saw first, drop marks it did not see again."""
        self.passes += 1
        for key in seen:
            if key not in self.marks:
                self.marks[key] = self.passes
                if sightings and key in sightings:
                    self.sightings[key] = sightings[key]
        for key in list(self.marks):
            if key not in seen:
                del self.marks[key]
                self.sightings.pop(key, None)
