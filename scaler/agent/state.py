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

import heapq
from collections.abc import KeysView, Mapping
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
    # Job ids whose records are this book's own to change in place; the others it shares with a copy
    # of it (or with the book it was copied from): copy-on-write, so planning, which copies the book
    # on every pass, does not copy an hour of jobs (nor a set of their ids, as it once did).
    _owned: set[int] = field(init=False, repr=False, compare=False)
    # Indexes over ``jobs`` (an hour of finished jobs sits beside the few that matter): the planner
    # reads them on every batch, so `garo simulate` profiles showed whole-book scans as its hottest
    # lines. Kept up to date by the methods below, the only writers of a record.
    _queued: dict[str, set[int]] = field(init=False, repr=False, compare=False)  # group -> "queued" ids
    _open: set[int] = field(init=False, repr=False, compare=False)  # "queued" or "covered" ids
    _in_progress: dict[int, None] = field(init=False, repr=False, compare=False)
    _runner_names: dict[str, int] = field(init=False, repr=False, compare=False)  # name -> records naming it
    _running: dict[str, int] | None = field(init=False, repr=False, compare=False)  # running_on(), cached
    # (seen_at, id) of records that became finished, oldest first: ``prune`` pops what is an hour old
    # instead of scanning an hour of jobs on every pass. An entry whose record moved on is skipped.
    # None in a planning copy (which is never pruned): built from ``jobs`` if it ever is.
    _finished: list[tuple[float, int]] | None = field(init=False, repr=False, compare=False)
    # ``jobs`` and ``_runner_names`` are shared with a copy (or the book copied from) until either
    # book adds, replaces or drops a record: a plan that changes no job then copies neither dict.
    _shared: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._queued, self._open, self._in_progress, self._runner_names = {}, set(), {}, {}
        self._running, self._shared, self._finished = None, False, []
        self._owned = set(self.jobs)
        for record in self.jobs.values():
            self._add_index(record)

    def copy(self) -> Book:
        """An independent copy: the planner's scratch book, so planning never changes this one.

        Built field by field, without ``__init__`` (which would index ``jobs`` again): planning copies
        the book on every batch.
        """
        self._owned, self._shared = set(), True
        clone = object.__new__(Book)
        clone.jobs, clone.pending_jit, clone.delivered = self.jobs, dict(self.pending_jit), dict(self.delivered)
        clone.registered, clone.jit_cleared = dict(self.registered), set(self.jit_cleared)
        clone.stolen_checked, clone.marks, clone.sightings = (
            set(self.stolen_checked),
            dict(self.marks),
            dict(self.sightings),
        )
        clone.passes, clone.spent = self.passes, dict(self.spent)
        clone._owned, clone._shared = set(), True
        clone._queued = {group: set(ids) for group, ids in self._queued.items()}
        clone._open, clone._in_progress = set(self._open), dict(self._in_progress)
        clone._runner_names, clone._running, clone._finished = self._runner_names, self._running, None
        return clone

    def _unshare(self) -> None:
        """Before this book changes ``jobs`` or ``_runner_names``: its own dicts, if it shares them."""
        if self._shared:
            self.jobs, self._runner_names, self._shared = dict(self.jobs), dict(self._runner_names), False

    def _add_index(self, record: JobRecord) -> None:
        self._unshare()
        status = record.status
        if status == "queued":
            self._queued.setdefault(record.group, set()).add(record.id)
            self._open.add(record.id)
        elif status == "covered":
            self._open.add(record.id)
        elif status == "in_progress":
            self._in_progress[record.id] = None
            self._running = None
        elif status == "completed" and self._finished is not None:
            heapq.heappush(self._finished, (record.seen_at, record.id))
        if record.runner_name:
            self._runner_names[record.runner_name] = self._runner_names.get(record.runner_name, 0) + 1

    def _drop_index(self, record: JobRecord) -> None:
        self._unshare()
        status = record.status
        if status == "queued":
            self._queued[record.group].discard(record.id)
            self._open.discard(record.id)
        elif status == "covered":
            self._open.discard(record.id)
        elif status == "in_progress":
            del self._in_progress[record.id]
            self._running = None
        name = record.runner_name
        if name:
            left = self._runner_names[name] - 1
            if left:
                self._runner_names[name] = left
            else:
                del self._runner_names[name]

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
            self._unshare()
            self.jobs[job_id] = record
            self._owned.add(job_id)
            self._add_index(record)
            return record
        if _ORDER.get(status, 0) >= _ORDER.get(record.status, 0):
            self._drop_index(record)
            record.status = status if status != "waiting" or record.status != "queued" else "queued"
            record.runner_name = runner_name or record.runner_name
            record.seen_at = now
            self._add_index(record)
        if repo and not record.repo:
            record.repo = repo
        if workflow and not record.workflow:
            record.workflow = workflow
        return record

    def learn_repo(self, job_id: int, repo: str) -> None:
        """The repository of a job known only by number (from a VM's name): now GitHub can be asked about it."""
        record = self._own(job_id)
        if record is not None and not record.repo:
            record.repo = repo

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
        pending = self.pending_jit
        # The few pending configs looked up in the listing, not the listing in them (a hot line).
        for name in [name for name in pending if name in names] if pending else ():
            del pending[name]
            self.delivered.setdefault(name, now)

    def queued(self, group: str) -> list[JobRecord]:
        """Jobs of a group still waiting for a runner, oldest first.

        A ``waiting`` job is blocked on an environment's approval and may stay so
        for hours: it gets capacity when GitHub queues it, not before.
        """
        jobs = [self.jobs[job_id] for job_id in self._queued.get(group, ())]
        return sorted(jobs, key=lambda j: (j.seen_at, j.id))

    def covered(self, group: str) -> list[JobRecord]:
        """Jobs of a group acknowledged on capacity that have not started yet."""
        return [j for j in self.open_jobs() if j.group == group and j.status == "covered"]

    def open_jobs(self) -> list[JobRecord]:
        """Jobs of any group that still wait (``queued``) or were acknowledged on capacity (``covered``)."""
        return [self.jobs[job_id] for job_id in self._open]

    def names_a_job(self, name: str) -> bool:
        """Does any job in the book name this runner (it ran, runs or was handed a job)?"""
        return name in self._runner_names

    @property
    def job_runner_names(self) -> KeysView[str]:
        """The runner names the book's jobs carry, live (``names_a_job`` for a loop: no call per name)."""
        return self._runner_names.keys()

    def runner_names(self) -> set[str]:
        """Every runner name the book's jobs carry."""
        return set(self._runner_names)

    def cover(self, job_id: int) -> None:
        record = self._own(job_id)
        if record is not None and record.status == "queued":
            self._drop_index(record)
            record.status = "covered"
            self._add_index(record)

    def requeue(self, job_id: int, now: float) -> None:
        """GitHub says the job still waits although its capacity is gone (replaced VM)."""
        record = self._own(job_id)
        if record is not None and (
            record.status in ("queued", "covered") or (record.status == "in_progress" and record.runner_name is None)
        ):
            self._drop_index(record)
            record.status, record.seen_at = "queued", now
            self._add_index(record)

    def running_on(self) -> dict[str, int]:
        """Runner name -> job id for jobs known to be in progress (shared and cached: do not change it)."""
        if self._running is None:
            jobs = self.jobs
            named = [(name, i) for i in self._in_progress if (name := jobs[i].runner_name)]
            running = dict(named)
            if len(running) < len(named):
                # Two jobs name one runner: the book's order decides, as it always did.
                running = {j.runner_name: j.id for j in jobs.values() if j.status == "in_progress" and j.runner_name}
            self._running = running
        return self._running

    def finished(self, job_id: int) -> bool:
        record = self.jobs.get(job_id)
        return record is not None and record.status == "completed"

    def prune(self, now: float) -> None:
        """Forget finished jobs after an hour; a duplicate that late is harmless (reconcile trims)."""
        if self._finished is None:
            self._finished = [(j.seen_at, j.id) for j in self.jobs.values() if j.status == "completed"]
            heapq.heapify(self._finished)
        finished, old = self._finished, []
        while finished and now - finished[0][0] > _KEEP_FINISHED:
            seen_at, job_id = heapq.heappop(finished)
            record = self.jobs.get(job_id)
            if record is not None and record.status == "completed" and record.seen_at == seen_at:
                old.append(job_id)
        for job_id in dict.fromkeys(old):
            self._unshare()
            self._drop_index(self.jobs.pop(job_id))
            self._owned.discard(job_id)
        for name in [name for name, when in self.spent.items() if now - when > _KEEP_FINISHED]:
            del self.spent[name]

    def forget_instance(self, name: str) -> None:
        """The VM is deleted: forget it, and a job running on it is over (or lost with it)."""
        self.pending_jit.pop(name, None)
        self.delivered.pop(name, None)
        self.registered.pop(name, None)
        self.stolen_checked.discard(name)
        self.jit_cleared.discard(name)
        if name not in self._runner_names:
            return
        for job_id in [i for i in self._in_progress if self.jobs[i].runner_name == name]:
            record = self._own(job_id)
            assert record is not None
            self._drop_index(record)
            record.status = "completed"
            self._add_index(record)

    def _own(self, job_id: int) -> JobRecord | None:
        """The job's record, made this book's own before it is changed (see ``_owned``)."""
        record = self.jobs.get(job_id)
        if record is not None and job_id not in self._owned:
            self._unshare()
            self._owned.add(job_id)
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
