"""The planner: from what the agent knows to the list of actions that would fix the difference.

Every function here is pure. It takes the book, a snapshot of the cloud and
GitHub, the time, and the answers to read-only GitHub questions the observe
step already gathered, and returns a :class:`~scaler.agent.actions.Plan`. It
never calls anything and never changes its inputs: it reads the confirmation
marks but the executor writes them. When an answer would change the plan, the
plan lists the question; the observe step asks it and plans again.

Replicas agree because names are a function of what the cloud lists: a job's
first VM is ``garo-<dept>-<group>-<job>``, a replacement takes the generation
after the highest one the listing (or this agent) has seen for that job.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping

from scaler import naming
from scaler.agent.actions import (
    Answer,
    ClearJit,
    Create,
    DeliverJit,
    Plan,
    Question,
    QueueJit,
    Record,
    Requeue,
    Resume,
)
from scaler.agent.classes import stranded
from scaler.agent.draft import Draft
from scaler.agent.policy import by_priority, kept_names, plan_capacity
from scaler.agent.reconcile import orphan_runners, reconcile_group, remove_vm, unconfigured
from scaler.agent.state import WAITING_STATUSES, Book, JobRecord
from scaler.agent.views import ACTIVE, REPORTED_OVER, GroupView, Snapshot, covered, job_of, view
from scaler.backends.base import JOB_KEY, STATE_LABEL, Instance, InstanceState
from scaler.config import StackConfig

NO_ANSWERS: Mapping[int, Answer] = {}
READY = (InstanceState.RUNNING, InstanceState.RESUMING)
ACTIVE_STATES = (
    InstanceState.CREATING,
    InstanceState.RUNNING,
    InstanceState.RESUMING,
)  # a VM that exists: its metadata can be written
MAX_GENERATION = 99
REPLACEMENT_CHECKS = 20  # GitHub questions a plan asks before replacement VMs (one GET each)


def plan_reconcile(
    config: StackConfig,
    book: Book,
    snap: Snapshot,
    now: float,
    answers: Mapping[int, Answer] = NO_ANSWERS,
    *,
    jit_limit: int = 50,
    jit_budget: int | None = None,
) -> Plan:
    """One reconcile pass: repairs per group, orphan runners, capacity, then JIT delivery."""
    draft = Draft(config, book, snap, now, answers)
    draft.plan.reconcile = True
    for group in draft.group_names:
        if group in draft.instances:
            reconcile_group(draft, group)
        else:  # not listed this time: its deletion candidates keep their first sighting
            draft.plan.seen |= {key for key in book.marks if key.startswith(f"vm:{group}:")}
    if snap.runners is None:
        draft.plan.seen |= {key for key in book.marks if key.startswith("runner:")}
    orphan_runners(draft)
    for group in draft.group_names:
        if group in draft.instances:
            add_capacity(draft, group)
            by_state: dict[InstanceState, int] = {}  # counted by member: ``.value`` is a slow property
            for inst in snap.instances[group].values():
                by_state[inst.state] = by_state.get(inst.state, 0) + 1
            draft.plan.vm_states[group] = {state.value: count for state, count in by_state.items()}
            kept = kept_names(config.group(group), snap.instances[group].values(), now)
            draft.plan.kept[group] = len(kept)
            draft.plan.ages[group] = _oldest(book, snap, group, now, kept)
    deliver(draft, jit_limit, jit_budget)
    return draft.plan


def _oldest(book: Book, snap: Snapshot, group: str, now: float, kept: Collection[str]) -> tuple[float, float]:
    """Ages of the group's oldest active VM (kept ones may outlive their time-to-live) and oldest waiting job."""
    active = [i.created_at for i in snap.instances[group].values() if i.state in ACTIVE_STATES and i.name not in kept]
    waiting = [j.first_seen or j.seen_at for j in book.open_jobs() if j.group == group]
    return max((now - t for t in active), default=0.0), max((now - t for t in waiting), default=0.0)


def plan_settle(
    config: StackConfig,
    book: Book,
    snap: Snapshot,
    now: float,
    groups: Collection[str],
    held_jobs: Collection[int],
    answers: Mapping[int, Answer] = NO_ANSWERS,
    *,
    jit_limit: int = 50,
    jit_budget: int | None = None,
) -> Plan:
    """Between reconciles: capacity for groups with waiting jobs, and JIT configs for VMs that exist.

    A held job whose own VM exists without a config this agent gave (a create
    that timed out but landed, a VM from before a restart) gets one first; so
    does a VM that asks this agent for its config in vain (its maker died).
    ``answers``: GitHub's word on jobs the plan asked about (replacements).
    """
    if not groups and not answers and snap.runners is None:
        # JIT delivery only (most batches between reconciles): it reads nothing a draft would change
        # first, so the plan is built without one (a copy of the book per batch).
        return Plan(actions=list(_deliveries(book.pending_jit, snap.instances, jit_limit, jit_budget)))
    draft = Draft(config, book, snap, now, answers)
    for group in sorted(set(groups) & set(draft.instances)):
        current = view(draft.department, draft.book, group, draft.snap)
        for job_id, own in covered(current).items():
            max_age = draft.config.group(group).time_to_start
            if own and job_id in held_jobs and unconfigured(draft, draft.instances[group][own], max_age):
                draft.add(QueueJit(group=group, name=own, reason=f"VM of held job {job_id} has no runner config"))
        add_capacity(draft, group, current)  # a queued config changes no view: reuse it
    asking = snap.asking or frozenset()
    for group in sorted(draft.instances) if asking else ():
        for name in sorted(asking & draft.instances[group].keys()):
            inst = draft.instances[group][name]
            if inst.state in READY and unconfigured(draft, inst):
                draft.add(QueueJit(group=group, name=name, reason="VM asks for a runner config nobody gave it"))
    deliver(draft, jit_limit, jit_budget)
    return draft.plan


def settled(
    config: StackConfig, book: Book, snap: Snapshot, groups: Collection[str], held: Mapping[str, tuple[int, str]]
) -> list[str]:
    """Held ``queued`` messages (ack id -> job, group) that can be acknowledged now.

    A job is done when it no longer waits, or when it is covered: by its own
    VM once that VM has its config, or by a spare VM once no VM of its group
    still waits for one.
    """
    listed = set(groups) & set(snap.instances)
    cover: dict[str, dict[int, str | None]] = {}  # per group, derived once a held job there needs it
    pending_groups = set(book.pending_jit.values())
    done: list[str] = []
    for ack_id, (job_id, group) in held.items():
        record = book.jobs.get(job_id)
        if record is None or record.status != "queued":
            done.append(ack_id)
            continue
        if group not in listed:
            continue
        if group not in cover:
            cover[group] = covered(view(config.department, book, group, snap))
        if job_id in cover[group]:
            own = cover[group][job_id]
            if (own not in book.pending_jit) if own else (group not in pending_groups):
                done.append(ack_id)
    return done


def plan_deletes(
    config: StackConfig,
    book: Book,
    now: float,
    group: str,
    names: Collection[str],
    reason: str,
    answers: Mapping[int, Answer] = NO_ANSWERS,
    kept: Collection[str] = (),
) -> Plan:
    """Delete VMs whose job completed (its runner deregisters itself), checking the jobs they were made for.

    ``kept`` VMs (an operator's ``garo-keep``, see ``policy.kept_names``) stay; reconcile deletes them once the keep expires.
    """
    draft = Draft(config, book, Snapshot(None, {group: {}}), now, answers)
    for name in sorted(set(names) - set(kept)):
        remove_vm(draft, group, Instance(name, group, InstanceState.RUNNING, now), reason)
    return draft.plan


def start_actions(config: StackConfig, book: Book, group: str, runner: str, job_id: int) -> list[ClearJit | Requeue]:
    """A job started on ``runner``: its JIT config is spent; if the VM was made for another job, that one waits again."""
    made_for = naming.job_of(config.department, group, runner)
    if made_for is not None and made_for != job_id:
        victim = book.jobs.get(made_for)
        repo = victim.repo if victim is not None else ""
        return [
            Requeue(group=group, name=str(made_for), reason=f"job {job_id} took its VM", job_id=made_for, repo=repo),
            ClearJit(group=group, name=runner, reason="runner took another job", job_label=job_id),
        ]
    if made_for is None:
        # A warm VM: label it with the job it runs, so that any replica can believe that job's
        # completed event from the VM's own metadata (scaler/agent/trust.py) without asking GitHub,
        # where the listing shows such a label (AWS tags; the GCP backend sends none, see gcp.py).
        return [ClearJit(group=group, name=runner, reason="warm runner took a job", job_label=job_id)]
    if runner in book.jit_cleared:
        return []
    return [ClearJit(group=group, name=runner, reason="runner started; its JIT config is spent")]


def plan_verify(
    config: StackConfig,
    book: Book,
    now: float,
    held_jobs: Collection[int],
    verify_after: float,
    answers: Mapping[int, Answer] = NO_ANSWERS,
    limit: int = 10,
) -> Plan:
    """Jobs we think wait (or covered) but have not heard of for a while: ask GitHub about them.

    Another replica may have seen them start; without this a replica would
    keep capacity for them forever. A job whose repository we do not know
    (learnt from a stolen VM's name) cannot be asked about and is given up
    after its group's time-to-start.
    """
    stale = [j for j in book.open_jobs() if now - j.seen_at >= verify_after]
    if not stale:
        return Plan()  # the common case, on every batch: no draft (a copy of the book) needed
    draft = Draft(config, book, Snapshot(None), now, answers)
    for record in sorted(stale, key=lambda j: (j.seen_at, j.id)):
        if not record.repo:
            if record.status == "queued" and now - record.seen_at > config.group(record.group).time_to_start:
                reason = "no repository to ask GitHub about it; given up"
                draft.add(
                    Record(group=record.group, name=str(record.id), reason=reason, job_id=record.id, status="covered")
                )
            continue
        if record.id in held_jobs or record.id in answers or len(draft.plan.questions) >= limit:
            continue
        draft.ask(Question(record.id, record.group, record.repo))
    return draft.plan


def add_capacity(draft: Draft, group: str, current: GroupView | None = None) -> GroupView:
    """Resume standby VMs, then create named VMs, up to the policy's target (``current``: the draft's view now)."""
    spec = draft.config.group(group)
    current = current if current is not None else view(draft.department, draft.book, group, draft.snap)
    # Kept VMs not running a job hold quota (they count against max) but are no capacity.
    held = kept_names(spec, draft.instances[group].values(), draft.now) - current.busy
    held = frozenset(n for n in held if draft.instances[group][n].state is not InstanceState.DELETING)
    # VMs only another class could take (their class's runner group) are no capacity for these jobs either.
    held |= stranded(draft.config, draft.book, group, [i.name for i in current.active if i.name not in current.busy])
    cap = plan_capacity(
        spec,
        active=len([i for i in current.active if i.name not in held]),
        finished=len(current.finished | held),
        busy=len(current.busy),
        queued=current.demand,
        standby=len(current.standby),
        now=draft.now,
    )
    draft.plan.desired[group] = cap.desired
    draft.plan.demand[group] = current.demand
    if cap.resume:
        draft.add(Resume(group=group, name=f"{cap.resume} standby VM(s)", reason="capacity", count=cap.resume))
    for action in _creates(draft, group, current, cap.create, held):
        draft.add(action)
    return current


def _creates(draft: Draft, group: str, current: GroupView, count: int, held: frozenset[str]) -> list[Create]:
    """Names every replica would choose (the cloud dedups them): queued jobs first, then warm slots.

    Queued jobs are served in priority order (``policy.by_priority``: class, aging,
    then first come first served), so at ``max`` the next free slot goes to the
    highest class. A kept VM (``held``) is nobody's capacity.

    What the listing shows decides, not what this replica remembers: a job
    that has a VM the listing does not show as used (a busy runner, relabelled
    for another job, reporting its job over) gets none, and a replacement takes
    the generation after the highest the cloud or GitHub lists for the job.
    Otherwise a replica that restarted, or that misread a reused name, would
    give a job a second VM.
    """
    if count <= 0:
        return []  # what follows only names VMs to create
    instances, book, runners = draft.instances[group], draft.book, draft.snap.runners or {}

    def taken(name: str) -> bool:  # the listing's names and spent_names (asked per name: no set of them all)
        return name in instances or name in runners or book.names_a_job(name) or name in book.spent

    highest: dict[int, int] | None = None  # parsed only when a job needs a VM named
    waited_on = _waited_on(draft, group, held) if current.queued else set()
    chosen: list[Create] = []
    replacements = [0]  # questions asked for replacements this plan (bounded)
    for job in by_priority(draft.config, current.queued, draft.now):
        if len(chosen) >= count:
            return chosen
        if current.own.get(job.id) not in (None, *held):
            continue
        if job.id in waited_on:
            count -= 1  # its VM is on its way or idle for it, whatever this replica thinks of it
            continue
        if highest is None:
            highest = _highest_generations(draft.department, group, [*instances, *runners])
        first = highest.get(job.id, -1) + 1
        if first and not _still_waits(draft, group, job, replacements):
            count -= 1  # asked (or to ask): its slot is not a warm VM's meanwhile
            continue
        for gen in range(first, MAX_GENERATION + 1):
            name = naming.instance_name(draft.department, group, job.id, gen)
            if not taken(name):
                reason = f"queued job {job.id}" + (f" (replacement {gen})" if gen else "")
                chosen.append(Create(group=group, name=name, reason=reason, job_id=job.id, repo=job.repo))
                break
    slot = 0
    while len(chosen) < count:
        name = naming.warm_name(draft.department, group, slot)
        if not taken(name):
            chosen.append(Create(group=group, name=name, reason="warm pool"))
        slot += 1
    return chosen


def _waited_on(draft: Draft, group: str, held: frozenset[str]) -> set[int]:
    """Jobs that have a VM on its way or idle for them, as the listings show it (see ``_creates``)."""
    department, instances, book = draft.department, draft.instances[group], draft.book
    runners = draft.snap.runners
    waited_on: set[int] = set()
    for inst in instances.values():  # _waits_for, inlined: asked of every VM on every batch that creates
        name = inst.name
        if name in held or inst.state not in ACTIVE:
            continue
        job_id = job_of(department, group, name)
        if job_id is None:
            continue
        runner = runners.get(name) if runners is not None else None
        if runner is not None and runner.busy:
            continue
        labelled = inst.metadata.get(JOB_KEY)
        if (labelled is not None and labelled != str(job_id)) or inst.labels.get(STATE_LABEL) in REPORTED_OVER:
            continue
        waited_on.add(job_id)
    # A replica's VM listing may be older than its runner listing (backends cache listings): an idle
    # runner named after a job, whose VM this listing does not show yet, is a VM on its way for it.
    # Without this, replicas gave a job whose first VM another job took two replacements at once.
    for name, runner in (runners or {}).items():
        if name not in instances and not runner.busy and not book.names_a_job(name) and name not in book.spent:
            parsed = _generation(department, group, name)
            if parsed is not None:
                waited_on.add(parsed[0])
    return waited_on


def _highest_generations(department: str, group: str, names: list[str]) -> dict[int, int]:
    """Job -> the highest generation of its VMs among these names."""
    prefix = _prefix(department, group)
    highest: dict[int, int] = {}
    for name in names:
        if not name.startswith(prefix):
            continue  # another group's runner: no generation of this group's jobs
        parsed = _generation(department, group, name)
        if parsed is not None:
            job, gen = parsed
            if gen > highest.get(job, -1):
                highest[job] = gen
    return highest


def _still_waits(draft: Draft, group: str, job: JobRecord, asked: list[int]) -> bool:
    """Before a replacement VM: does GitHub say the job still waits? (No answer yet: not now.)

    A job gets a replacement when the VM made for it went to another job; but
    the job itself has often started elsewhere meanwhile (on a warm runner,
    another job's VM), and only the replica that got its ``in_progress`` knows.
    A replacement for it would run nothing, or another job, and bill while it
    waits. One GET per replacement (at most :data:`REPLACEMENT_CHECKS` a plan;
    the rest wait for the next one) settles it. A job whose repository is
    unknown cannot be asked about and is replaced as before.
    """
    if not job.repo:
        return True
    answer = draft.answers.get(job.id)
    if answer is None:
        if asked[0] < REPLACEMENT_CHECKS:
            asked[0] += 1
            draft.ask(Question(job.id, group, job.repo))
        return False
    return answer.job.status in WAITING_STATUSES


@functools.lru_cache(maxsize=1024)
def _prefix(department: str, group: str) -> str:
    return naming.group_prefix(department, group)


@functools.lru_cache(maxsize=65536)
def _generation(department: str, group: str, name: str) -> tuple[int, int] | None:
    """(job, generation) of a job VM's name; None for warm and foreign names.

    Cached: ``_creates`` asks it of every name listed on every batch that creates, and a name's
    parts never change.
    """
    prefix = _prefix(department, group)
    if not name.startswith(prefix):
        return None
    job, sep, gen = name[len(prefix) :].partition("-r")
    if not job.isdigit() or (sep and not gen.isdigit()):
        return None
    return int(job), int(gen or 0)


def deliver(draft: Draft, limit: int, budget: int | None) -> None:
    """JIT configs for pending VMs that exist (on GCE a VM is listed before it does), oldest request first."""
    for action in _deliveries(draft.book.pending_jit, draft.instances, limit, budget):
        draft.add(action)


def _deliveries(
    pending: Mapping[str, str], instances: Mapping[str, Mapping[str, Instance]], limit: int, budget: int | None
) -> list[DeliverJit]:
    room = limit if budget is None else min(limit, max(0, budget))
    actions: list[DeliverJit] = []
    for name, group in pending.items():
        if len(actions) >= room:
            break
        inst = instances.get(group, {}).get(name)
        if inst is not None and inst.state in READY:
            actions.append(DeliverJit(group=group, name=name, reason="VM exists; give it its runner config"))
    return actions


__all__ = [
    "add_capacity",
    "deliver",
    "plan_deletes",
    "plan_reconcile",
    "plan_settle",
    "plan_verify",
    "settled",
    "start_actions",
]
