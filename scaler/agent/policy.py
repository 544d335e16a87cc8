"""Capacity policy: how many VMs a runner group should have right now.

``desired = min(max, max(min, busy + queued + warm))`` where ``queued`` counts
jobs waiting for a runner and ``warm`` is the warm pool in force at this moment
(a schedule such as ``Mon-Fri 07:00-19:00 Europe/Amsterdam`` switches between
``size`` and ``off_hours_size``). VMs still being created or resumed count as
capacity, or every pass before they boot would order more.

Pure functions only: the same inputs give the same plan on every replica, which
is what makes two agents agree on the same instance names.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from scaler.agent.state import JobRecord
from scaler.backends.base import KEEP_KEY, Instance
from scaler.config import RunnerGroup, StackConfig, WarmPool
from scaler.config.model import PriorityRule
from scaler.config.priorities import CLASSES, DEFAULT_CLASS

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SCHEDULE_RE = re.compile(
    r"^(?P<d1>[A-Z][a-z]{2})(-(?P<d2>[A-Z][a-z]{2}))?\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})(\s+(?P<tz>\S+))?$"
)


@dataclass(frozen=True)
class Schedule:
    """An office-hours window; days wrap (``Fri-Mon``), hours may cross midnight."""

    days: frozenset[int]
    start: dt.time
    end: dt.time
    tz: ZoneInfo

    @classmethod
    def parse(cls, text: str) -> Schedule:
        match = _SCHEDULE_RE.match(text.strip())
        if not match or match["d1"] not in _DAYS or (match["d2"] and match["d2"] not in _DAYS):
            raise ValueError(f"bad warm pool schedule {text!r}")
        first = _DAYS.index(match["d1"])
        last = _DAYS.index(match["d2"]) if match["d2"] else first
        days = frozenset((first + i) % 7 for i in range((last - first) % 7 + 1))
        start, end = (dt.time.fromisoformat(match[k]) for k in ("start", "end"))
        return cls(days, start, end, ZoneInfo(match["tz"] or "UTC"))

    def active(self, now: float) -> bool:
        local = dt.datetime.fromtimestamp(now, self.tz)
        t = local.time()
        if self.start <= self.end:
            return local.weekday() in self.days and self.start <= t < self.end
        # Overnight window: the part after midnight belongs to the previous day.
        if t >= self.start:
            return local.weekday() in self.days
        return t < self.end and (local.weekday() - 1) % 7 in self.days


# A schedule's text parsed once: the planner asks for the warm target of every group on every batch.
_schedule = functools.lru_cache(maxsize=64)(Schedule.parse)


def warm_target(pool: WarmPool, now: float) -> int:
    """Warm pool size in force at ``now`` (unix seconds)."""
    if pool.schedule is None:
        return pool.size
    return pool.size if _schedule(pool.schedule).active(now) else pool.off_hours_size


def desired_capacity(group: RunnerGroup, *, busy: int, queued: int, now: float) -> int:
    """Target number of active VMs (creating, resuming or running) for the group."""
    wanted = busy + queued + warm_target(group.warm_pool, now)
    return min(group.max, max(group.min, wanted))


@dataclass(frozen=True)
class CapacityPlan:
    """What to add to a group: resume standby VMs first (faster), then create."""

    desired: int
    active: int
    resume: int
    create: int

    @property
    def missing(self) -> int:
        return self.resume + self.create


def plan_capacity(
    group: RunnerGroup, *, active: int, busy: int, queued: int, standby: int, now: float, finished: int = 0
) -> CapacityPlan:
    """How many VMs to resume and create so the group reaches its desired size.

    ``finished`` VMs (job over, not yet deleted) are no capacity but still
    count against ``max``: the group never holds more than ``max`` VMs.
    """
    desired = desired_capacity(group, busy=busy, queued=queued, now=now)
    missing = max(0, min(desired - active, group.max - active - finished))
    resume = min(missing, standby)
    return CapacityPlan(desired=desired, active=active, resume=resume, create=missing - resume)


def priority_class(rules: Sequence[PriorityRule], repo: str, workflow: str) -> str:
    """The class of the first rule whose every given list matches the job; ``normal`` if none does."""
    for rule in rules:
        repo_ok = not rule.repositories or any(fnmatch.fnmatchcase(repo, p) for p in rule.repositories)
        workflow_ok = not rule.workflows or any(fnmatch.fnmatchcase(workflow, p) for p in rule.workflows)
        if repo_ok and workflow_ok:
            return rule.klass
    return DEFAULT_CLASS


def effective_rank(config: StackConfig, job: JobRecord, now: float) -> int:
    """0 is served first. A job rises one class per ``priorityAging`` seconds it waits, so none starves."""
    base = CLASSES.index(priority_class(config.priorities, job.repo, job.workflow))
    waited = max(0.0, now - (job.first_seen or job.seen_at))
    return max(0, base - int(waited // config.priority_aging))


def by_priority(config: StackConfig, jobs: Sequence[JobRecord], now: float) -> list[JobRecord]:
    """Waiting jobs in the order they get the next free VM: effective class, then first come first served.

    Without ``garo:priorities`` the order is left as given (the book's: oldest first).
    """
    if not config.priorities:
        return list(jobs)
    return sorted(jobs, key=lambda j: (effective_rank(config, j, now), j.first_seen or j.seen_at, j.id))


def keep_until(group: RunnerGroup, inst: Instance) -> float:
    """Until when (unix seconds) the VM's ``garo-keep`` protects it; 0 if it is not kept.

    ``true`` (an operator's hand-set label or tag) or a unix time (``garo keep --for``),
    never past ``created_at + timeToLive + keepFor``: a forgotten label cannot keep a VM forever.
    """
    value = (inst.metadata.get(KEEP_KEY) or inst.labels.get(KEEP_KEY) or "").strip().lower()
    if not value:
        return 0.0
    bound = inst.created_at + group.time_to_live + group.keep_for
    if value == "true":
        return bound
    try:
        return min(float(value), bound)
    except ValueError:
        return 0.0  # neither true nor a time: not a keep we understand


def kept_names(group: RunnerGroup, instances: Iterable[Instance], now: float) -> frozenset[str]:
    """VMs of the group whose keep is in force at ``now``: no reconcile, time-to-live or completion deletes them."""
    # Most VMs carry no keep at all: look for the key before parsing it (every batch lists every VM).
    return frozenset(
        i.name for i in instances if (KEEP_KEY in i.metadata or KEEP_KEY in i.labels) and now < keep_until(group, i)
    )
