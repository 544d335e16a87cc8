"""Reconcile rules: compare VMs, GitHub's runners and queued jobs, and plan the repairs.

This is what makes lost, duplicated, reordered and "stolen" events harmless.
Deletions are confirmed: a VM or runner is removed only when two consecutive
passes both found it removable (the marks live in memory; after a restart two
fresh observations are needed). A busy runner is never removed, and an idle
one is deregistered *before* its VM is deleted, so GitHub cannot hand it a job
in between (deregistering a busy runner fails with 422 and the VM is kept).

Pure: these functions add actions to a :class:`~scaler.agent.draft.Draft` and
read GitHub only through the answers the observe step gathered.
"""

from __future__ import annotations

from scaler import naming
from scaler.agent.actions import ClearJit, Delete, Deregister, Mark, Question, QueueJit, Record, Requeue, Spend
from scaler.agent.classes import stranded
from scaler.agent.draft import Draft
from scaler.agent.policy import desired_capacity, kept_names
from scaler.agent.state import WAITING_STATUSES, Sighting
from scaler.agent.views import REPORTED_OVER, github_says_over, spent_names, view
from scaler.backends.base import REPO_KEY, STATE_LABEL, Instance, InstanceState

CLEAR_PER_PASS = 50  # JIT configs cleared per group and pass (one Compute write each)
WAITING = ("queued", "covered")  # the book's statuses of a job without a runner
STOLEN_CHECKS_PER_PASS = 20  # busy VMs asked about per pass (one GitHub GET each; after a restart, all once)
PASS_PERIOD = 0.8  # share of the reconcile interval between passes (Agent._reconcile_and_schedule)
CONFIRM_AGE = 0.75  # share of confirm_soon a candidate other than a finished VM must have been one


def confirm_soon(interval: float) -> float:
    """Seconds until the pass that confirms a first sighting (other than a finished VM's)."""
    return min(interval * PASS_PERIOD, max(5.0, interval / 6))


def reconcile_group(draft: Draft, group: str) -> None:
    """Plan the removals, JIT clears and JIT deliveries one group needs."""
    book, snap, now = draft.book, draft.snap, draft.now
    spec = draft.config.group(group)
    _repos_from_vms(draft, group)
    _ask_about_vanished_runners(draft, group)
    before = view(draft.department, book, group, snap)
    # An operator keeps these for debugging (garo-keep): nothing below deletes them until the keep expires.
    kept = kept_names(spec, draft.instances[group].values(), now)
    removals: list[tuple[Instance, str]] = []
    never_ran: set[str] = set()  # never registered: no job can have taken them
    idle: list[Instance] = []
    clear: list[str] = []
    for inst in sorted(before.active, key=lambda i: i.created_at):
        runner = snap.runner(inst.name)
        age = now - inst.created_at
        if runner is not None and runner.status == "online" and inst.name not in book.jit_cleared:
            clear.append(inst.name)  # its runner started: the JIT config is spent
        if inst.name in before.busy:
            _check_stolen(draft, group, inst)
            continue  # never deleted, not even past its time-to-live
        if age > spec.time_to_live:
            if snap.runners is not None:  # without GitHub's view we cannot tell it is not busy
                removals.append((inst, "past time-to-live"))
        elif runner is None and snap.runners is not None:
            if age > spec.time_to_start:
                waits = _still_queued(draft, group, inst)
                never_ran.add(inst.name)
                removals.append((inst, "never registered within time-to-start" + ("; its job still waits" * waits)))
            elif inst.state is not InstanceState.CREATING and unconfigured(draft, inst):
                draft.add(QueueJit(group=group, name=inst.name, reason="VM has no runner config"))
        elif runner is not None and runner.status != "online" and age > spec.time_to_start:
            removals.append((inst, "runner offline"))
        elif runner is not None and runner.status == "online" and inst.name not in kept:
            idle.append(inst)
    said: set[str] = set()
    for inst in draft.instances[group].values():
        if inst.state is InstanceState.FAILED:
            removals.append((inst, "VM failed"))
        elif inst.name in before.finished and inst.name not in before.busy:
            if inst.labels.get(STATE_LABEL) in REPORTED_OVER or github_says_over(book, inst):
                said.add(inst.name)  # the VM or GitHub says its one job is over: as good as a completed event
            removals.append((inst, "job over (VM reports it)" if inst.name in said else "runner came and went"))
    # In a class's runner group, its own job gone elsewhere and none of its class waiting: after
    # time-to-start it goes (scaler/agent/classes.py), so a VM only one class can take is never leaked.
    stranded_now = stranded(draft.config, book, group, [i.name for i in idle])
    for inst in [i for i in idle if i.name in stranded_now and now - i.created_at > spec.time_to_start]:
        removals.append((inst, "no job of its priority class waits for it"))
        idle.remove(inst)
    # Idle beyond the warm pool: the policy's target, minus what is already going away.
    target = desired_capacity(spec, busy=len(before.busy), queued=before.demand, now=now)
    removals = [(inst, reason) for inst, reason in removals if inst.name not in kept]
    held = len([i for i in before.active if i.name in kept and i.name not in before.busy])  # no capacity
    surplus = len(before.active) - held - len([r for r in removals if r[0].name not in before.finished]) - target
    own_names = set(before.own.values())
    for inst in [i for i in idle if i.name not in own_names][: max(0, surplus)]:
        removals.append((inst, "idle beyond the warm pool"))
    going = {inst.name for inst, _ in removals}
    for name in [n for n in clear if n not in going][:CLEAR_PER_PASS]:
        draft.add(ClearJit(group=group, name=name, reason="runner online; its JIT config is spent"))
    deleted: list[str] = []
    # The slack (CONFIRM_AGE) is for the passes' own time: the next pass is scheduled from its start.
    min_age = CONFIRM_AGE * confirm_soon(draft.config.reconcile_interval)
    for inst, reason in removals:
        key = f"vm:{group}:{inst.name}"
        draft.plan.seen.add(key)
        sighting = draft.plan.sightings[key] = Sighting(now, snap.runners_at, over=inst.name in before.finished)
        if inst.name not in said and not draft.original.confirmed(key, sighting, min_age):
            draft.add(Mark(group=group, name=inst.name, reason=reason, key=key, job_over=sighting.over))
            continue
        remove_vm(draft, group, inst, reason, check_made_for=inst.name not in never_ran)
        deleted.append(inst.name)
    # Spare VMs that went away were the capacity of jobs acked on spare capacity.
    spare_lost = [n for n in deleted if n not in before.finished | before.busy | before.reserved | own_names]
    uncover(draft, group, len(spare_lost))


def unconfigured(draft: Draft, inst: Instance, max_age: float | None = None) -> bool:
    """A VM without a runner that should get a JIT config from this agent (its maker died, say).

    A runner that came and went between this agent's listings (a short job,
    another replica's config) leaves a VM without a runner too, and a second
    config would register a runner that the used VM never starts: it would
    wait with that offline runner until time-to-start. So where VMs pull their
    config (``Snapshot.asking``), a VM this agent did not make gets one only
    while it asks this agent for it in vain: a VM asks until it has a config,
    never after. It must also be older than :func:`ask_grace`, so that its
    maker, which configures it within seconds, is not raced for every VM.
    Without that sign (configs written, not pulled) only while it is young,
    within a reconcile interval: one that nobody configured by then is replaced
    after time-to-start like any VM that never registered. (``max_age``: the
    VM of a job whose message this agent holds, e.g. a create that timed out
    but landed, may be older: the agent is that job's keeper.)
    """
    book = draft.book
    if inst.name in book.delivered or inst.name in book.pending_jit or inst.name in book.registered:
        return False
    if inst.labels.get(STATE_LABEL) not in (None, "waiting"):
        return False
    age = draft.now - inst.created_at
    if draft.snap.asking is not None:
        grace, limit = ask_grace(draft.config.reconcile_interval), draft.config.group(inst.group).time_to_start
        return inst.name in draft.snap.asking and grace <= age <= limit
    return age <= (draft.config.reconcile_interval if max_age is None else max_age)


def ask_grace(interval: float) -> float:
    """Seconds a VM's maker has to configure it before another replica answers the VM's asks."""
    return interval / 2


def remove_vm(draft: Draft, group: str, inst: Instance, reason: str, *, check_made_for: bool = True) -> None:
    """Delete one VM; first make sure the job it was made for is not left without one."""
    if check_made_for and draft.made_for_waits(group, inst):
        draft.add(Spend(group=group, name=inst.name, reason="its job still waits: another job took this VM"))
    runner = draft.snap.runner(inst.name)
    draft.add(Delete(group=group, name=inst.name, reason=reason, runner_id=runner.id if runner else None))


def uncover(draft: Draft, group: str, count: int) -> None:
    """``count`` spare VMs are gone: as many jobs covered by spare capacity wait again, oldest first.

    A job acknowledged because an idle VM made for another job could take
    it has no VM of its own; when that VM is deleted (never registered,
    runner offline, ...) the job must count as waiting again, or the group
    would think it has capacity it no longer has.
    """
    if count <= 0:
        return
    # A VM named after a job is its own only while no other job used it (a spent name is not).
    spent = spent_names(draft.book, group, draft.snap)
    with_own_vm = {naming.job_of(draft.department, group, n) for n in draft.instances[group] if n not in spent}
    covered = sorted(
        (
            j
            for j in draft.book.open_jobs()
            # Without a repo the job was only inferred from a VM's name and parked as covered
            # because it cannot be checked: not a job whose message we acknowledged.
            if j.group == group and j.status == "covered" and j.repo and j.id not in with_own_vm
        ),
        key=lambda j: (j.seen_at, j.id),
    )
    for record in covered[:count]:
        reason = "job lost the spare VM that covered it; it waits again"
        draft.add(Requeue(group=group, name=str(record.id), reason=reason, job_id=record.id, repo=record.repo))


def _repos_from_vms(draft: Draft, group: str) -> None:
    """Waiting jobs known only by number learn their repository from the VM made for them.

    After a restart the agent hears of a job whose VM another job took only
    through that VM's name (``start_actions``). Without its repository GitHub
    cannot be asked whether it still waits, and ``plan_verify`` would give it
    up. The VM's ``garo-repo`` was written when it was made for that job and
    is never rewritten (a stolen VM is relabelled with ``garo-job`` only).
    """
    for inst in draft.instances[group].values():
        job_id = naming.job_of(draft.department, group, inst.name)
        record = draft.book.jobs.get(job_id) if job_id is not None else None
        repo = inst.metadata.get(REPO_KEY, "")
        if record is not None and job_id is not None and repo and not record.repo and record.status in WAITING:
            reason = "its repository, from the metadata of the VM made for it"
            draft.add(Record(group=group, name=str(job_id), reason=reason, job_id=job_id, repo=repo))


def _ask_about_vanished_runners(draft: Draft, group: str) -> None:
    """A VM we think runs a job lost its runner from the listing: is that job over? (Ask GitHub.)"""
    if draft.snap.runners is None:
        return
    running_on = draft.book.running_on()
    for inst in draft.instances[group].values():
        job_id = running_on.get(inst.name)
        if job_id is None or draft.snap.runner(inst.name) is not None:
            continue
        record = draft.book.jobs[job_id]
        # Its start was heard of before GitHub listed the runners: the runner existed and is gone now.
        if record.repo and (inst.name in draft.book.registered or record.seen_at < draft.snap.runners_at):
            draft.ask(Question(job_id, group, record.repo))


def _still_queued(draft: Draft, group: str, inst: Instance) -> bool:
    """Does the job this never-registered VM was made for still wait? (No answer: assume it does.)"""
    job_id = naming.job_of(draft.department, group, inst.name)
    record = draft.original.jobs.get(job_id) if job_id else None
    # After a restart the book is empty: the VM's own metadata says which repo its job is in.
    repo = (record.repo if record else "") or inst.metadata.get(REPO_KEY, "")
    if not job_id or not repo:
        return False
    answer = draft.ask(Question(job_id, group, repo))
    return answer is None or answer.job.status in WAITING_STATUSES


def _check_stolen(draft: Draft, group: str, inst: Instance) -> None:
    """Once per busy VM: did it run the job it was made for? (At most a few GitHub questions a pass.)"""
    if inst.name in draft.original.stolen_checked:
        return
    asked = sum(1 for q in draft.plan.questions.values() if q.vm) + sum(
        1 for a in draft.answers.values() if a.question.vm
    )
    made_for = naming.job_of(draft.department, group, inst.name)
    if made_for not in draft.answers and asked >= STOLEN_CHECKS_PER_PASS:
        return
    if draft.made_for_waits(group, inst, vm=inst.name):
        draft.add(Spend(group=group, name=inst.name, reason="its job still waits: another job took this VM"))


def orphan_runners(draft: Draft) -> None:
    """Runners of ours whose VM is gone: deregister (GitHub refuses if busy)."""
    if draft.snap.runners is None:
        return
    names = {name for insts in draft.instances.values() for name in insts}
    listed = list(draft.instances)  # a group we could not list would make all its runners look orphaned
    for runner in sorted(draft.snap.runners.values(), key=lambda r: r.name):
        if runner.name in names or runner.busy or not naming.group_of(draft.department, listed, runner.name):
            continue
        group = naming.group_of(draft.department, list(draft.group_names), runner.name) or ""
        key = f"runner:{runner.name}"
        draft.plan.seen.add(key)
        if not draft.original.confirmed(key):
            draft.add(Mark(group=group, name=runner.name, reason="runner has no VM", key=key))
        else:
            draft.add(Deregister(group=group, name=runner.name, reason="runner has no VM", runner_id=runner.id))
