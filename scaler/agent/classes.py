"""A runner group per priority class: which group a VM's runner registers in, and which VMs wait for their class.

GitHub hands a registered runner to any queued job whose labels it has and
whose repository (and workflow) the runner's *group* admits. So ordering VM
creation by class (``policy.by_priority``) is not enough when classes share
labels: a background job could take the VM made for a deploy job. With
``garo:priorityRunnerGroups`` each class other than ``normal`` whose every rule
names repositories gets a runner group restricted to them (see
``scaler.github.runner_groups``), and the VM made for a job of that class gets
its JIT config in that group: only that class's jobs can take it.

The group follows the job's *base* class (its repository and workflow), never
its aged one: a background job aged to compete as deploy still registers in the
group its repository can use. Warm VMs and jobs of classes without a group keep
the department's group. Pure functions: every replica chooses the same group.
"""

from __future__ import annotations

from collections.abc import Collection

from scaler import naming
from scaler.agent.policy import priority_class
from scaler.agent.state import Book, JobRecord
from scaler.config import StackConfig
from scaler.config.model import PriorityRule
from scaler.config.priorities import CLASSES, DEFAULT_CLASS
from scaler.github.runner_groups import ClassGroups


def class_rules(config: StackConfig) -> dict[str, tuple[PriorityRule, ...]]:
    """The classes that get a runner group of their own, with the rules that define each.

    A class qualifies when every one of its rules names repositories: a rule
    matching any repository cannot be expressed as a selected-repositories list.
    """
    if not config.priority_runner_groups:
        return {}
    rules: dict[str, list[PriorityRule]] = {}
    for rule in config.priorities:
        if rule.klass != DEFAULT_CLASS:
            rules.setdefault(rule.klass, []).append(rule)
    return {
        klass: tuple(found)
        for klass, found in sorted(rules.items(), key=lambda kv: CLASSES.index(kv[0]))
        if all(rule.repositories for rule in found)
    }


def bound_class(config: StackConfig, job: JobRecord | None) -> str | None:
    """The class whose runner group the job's VM registers in; None: the department's own group."""
    if job is None or not config.priority_runner_groups:
        return None
    klass = priority_class(config.priorities, job.repo, job.workflow)
    return klass if klass in class_rules(config) else None


def runner_group_for(config: StackConfig, synced: ClassGroups, group: str, book: Book, vm: str) -> int:
    """The runner group id to pass to ``generate_jit_config`` for the VM ``vm`` of ``group``.

    The class group of the job the VM was made for when the last sync made it
    admit the job's repository (``synced``); otherwise the Garo group's
    ``runnerGroupId``. A VM whose job the book does not know (warm, or after a
    restart before the job's event), or whose repository the group does not
    admit yet (a repository created since the sync), takes the department's
    group: any job can use it, which loses exactness but never strands a job.
    """
    job_id = naming.job_of(config.department, group, vm)
    job = book.jobs.get(job_id) if job_id is not None else None
    klass = bound_class(config, job)
    chosen = synced.group_for(klass, job.repo) if klass is not None and job is not None else None
    return chosen if chosen is not None else config.group(group).runner_group_id


def stranded(config: StackConfig, book: Book, group: str, idle: Collection[str]) -> frozenset[str]:
    """Idle VMs of a class group that no waiting job can take: their own job ran elsewhere.

    Such a VM is in its class's runner group, so only a job of that class can
    take it. While one waits in the group it is capacity for it; otherwise it
    is nobody's capacity, and reconcile deletes it once it is older than the
    group's time-to-start (``reconcile.reconcile_group``): it is never leaked.
    """
    if not config.priority_runner_groups:
        return frozenset()
    waiting = {bound_class(config, job) for job in book.queued(group)}
    out = set()
    for name in idle:
        job_id = naming.job_of(config.department, group, name)
        job = book.jobs.get(job_id) if job_id is not None else None
        klass = bound_class(config, job)
        if klass is None or job is None or job.status in ("queued", "covered"):
            continue  # department group, or its own job still waits for it
        if klass not in waiting:
            out.add(name)
    return frozenset(out)
