"""Reconcile: compare VMs, GitHub's runners and queued jobs, and repair the difference.

This is what makes lost, duplicated, reordered and "stolen" events harmless.
Deletions are confirmed: a VM or runner is removed only when two consecutive
passes both found it removable (the marks live in memory; after a restart two
fresh observations are needed). A busy runner is never removed, and an idle
one is deregistered *before* its VM is deleted, so GitHub cannot hand it a job
in between (deregistering a busy runner fails with 422 and we skip it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from scaler import naming
from scaler.agent.fleet import Fleet, Snapshot, api_error_kind
from scaler.agent.policy import desired_capacity
from scaler.backends.base import REPO_KEY, STATE_LABEL, Instance, InstanceState
from scaler.github.models import Runner

log = logging.getLogger("garo.agent")
CLEAR_PER_PASS = 50  # JIT configs cleared per group and pass (one Compute write each)
STOLEN_CHECKS_PER_PASS = 20  # busy VMs asked about per pass (one GitHub GET each; after a restart, all once)


@dataclass(frozen=True)
class Action:
    kind: str  # delete | deregister | replace | deliver-jit | clear-jit | create | resume
    group: str
    name: str
    reason: str
    confirmed: bool = True

    def __str__(self) -> str:
        pending = "" if self.confirmed else " (first sighting; acts on the next pass)"
        return f"{self.kind:<11} {self.group or '-':<12} {self.name:<40} {self.reason}{pending}"


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    desired: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"group {g}: desired {d} active VMs" for g, d in sorted(self.desired.items())]
        lines += [str(a) for a in self.actions] or ["nothing to do"]
        return "\n".join(lines)


class Reconciler:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.pass_no = 0
        self._checks_left = STOLEN_CHECKS_PER_PASS

    def run(self, dry_run: bool = False) -> Plan:
        fleet, book = self.fleet, self.fleet.book
        self.pass_no += 1
        self._checks_left = STOLEN_CHECKS_PER_PASS
        plan = Plan()
        seen: set[str] = set()
        snap = fleet.snapshot()
        now = fleet.clock()
        for group in fleet.group_names:
            if group in snap.instances:
                try:
                    self._group(group, snap, plan, seen, now, dry_run)
                except Exception as exc:
                    fleet.metrics.reconcile_failures.inc()
                    log.warning("reconcile of a group failed", extra={"group": group, "error": api_error_kind(exc)})
        if snap.runners is not None:
            self._orphan_runners(snap, plan, seen, dry_run)
        if not dry_run:
            book.keep_marks(seen)
            book.prune(now)
            fleet.metrics.reconcile_passes.inc()
        for group in fleet.group_names:
            if group not in snap.instances:
                continue
            try:
                cap, added = fleet.ensure_capacity(group, snap, dry_run=dry_run)
            except Exception as exc:
                log.warning("cannot add capacity to a group now", extra={"group": group, "error": api_error_kind(exc)})
                continue
            plan.desired[group] = cap.desired
            if dry_run and cap.missing:
                for kind, count in (("resume", cap.resume), ("create", cap.create)):
                    if count:
                        plan.actions.append(
                            Action(kind, group, f"{count} VM(s)", "queued jobs or warm pool need capacity")
                        )
            plan.actions += [Action("create", group, n, "capacity") for n in added]
            counts: dict[str, int] = {}
            for inst in snap.instances[group].values():
                counts[inst.state.value] = counts.get(inst.state.value, 0) + 1
            fleet.metrics.set_vms(group, counts)
            waiting = [
                j.first_seen or j.seen_at
                for j in book.jobs.values()
                if j.group == group and j.status in ("queued", "covered")
            ]
            active = [i.created_at for i in fleet.view(group, snap).active]
            fleet.metrics.set_ages(group, now, active, waiting, fleet.config.group(group).time_to_live)
        if not dry_run:
            fleet.metrics.reconcile_success.set(fleet.clock())
        return plan

    def _candidate(self, key: str, seen: set[str], dry_run: bool) -> bool:
        seen.add(key)
        if dry_run:
            return self.fleet.book.marks.get(key, self.pass_no) < self.pass_no
        return self.fleet.book.confirm(key, self.pass_no)

    def _group(self, group: str, snap: Snapshot, plan: Plan, seen: set[str], now: float, dry_run: bool) -> None:
        fleet, book = self.fleet, self.fleet.book
        spec = fleet.config.group(group)
        view = fleet.view(group, snap)
        runners = snap.runners or {}
        removals: list[tuple[Instance, str, bool]] = []  # (instance, reason, is_replacement)
        idle: list[Instance] = []
        clear: list[str] = []
        for inst in sorted(view.active, key=lambda i: i.created_at):
            runner = runners.get(inst.name)
            age = now - inst.created_at
            if runner is not None and runner.status == "online" and inst.name not in book.jit_cleared:
                clear.append(inst.name)  # its runner started: the JIT config is spent
            if inst.name in view.busy:
                self._check_stolen(group, inst)
                if age > spec.time_to_live:
                    log.warning("VM past time-to-live but busy; not deleting", extra={"instance": inst.name})
                continue
            if age > spec.time_to_live:
                if snap.runners is not None:  # without GitHub's view we cannot tell it is not busy
                    removals.append((inst, "past time-to-live", False))
            elif runner is None and snap.runners is not None:
                if age > spec.time_to_start:
                    removals.append((inst, "never registered within time-to-start", self._still_queued(group, inst)))
                elif inst.name not in book.delivered and inst.name not in fleet.pending_jit:
                    if inst.labels.get(STATE_LABEL) in (None, "waiting") and inst.state is not InstanceState.CREATING:
                        plan.actions.append(Action("deliver-jit", group, inst.name, "VM has no runner config"))
                        if not dry_run:
                            fleet.pending_jit[inst.name] = group
            elif runner is not None and runner.status != "online" and age > spec.time_to_start:
                removals.append((inst, "runner offline", False))
            elif runner is not None and runner.status == "online":
                idle.append(inst)
        for inst in snap.instances[group].values():
            if inst.state is InstanceState.FAILED:
                removals.append((inst, "VM failed", False))
            elif inst.name in view.finished and inst.name not in view.busy:
                said = inst.labels.get(STATE_LABEL) in ("done", "failed")
                removals.append((inst, "job over (VM reports it)" if said else "runner came and went", False))
                if said:  # the VM itself reports its one job over: as good as a completed event
                    seen.add(f"vm:{group}:{inst.name}")
                    book.marks[f"vm:{group}:{inst.name}"] = -1
        # Idle beyond the warm pool: the policy's target, minus what is already going away.
        target = desired_capacity(spec, busy=len(view.busy), queued=view.demand, now=now)
        surplus = len(view.active) - len([r for r in removals if r[0].name not in view.finished]) - target
        own_names = set(view.own.values())
        for inst in [i for i in idle if i.name not in own_names][: max(0, surplus)]:
            removals.append((inst, "idle beyond the warm pool", False))
        going = {inst.name for inst, _, _ in removals}
        spent = [n for n in clear if n not in going][:CLEAR_PER_PASS]
        plan.actions += [Action("clear-jit", group, n, "runner online; its JIT config is spent") for n in spent]
        if spent and not dry_run:
            fleet.clear_jits([(group, name, {}) for name in spent])
        to_delete: list[str] = []
        for inst, reason, replace in removals:
            if not self._candidate(f"vm:{group}:{inst.name}", seen, dry_run):
                plan.actions.append(Action("delete", group, inst.name, reason, confirmed=False))
                continue
            plan.actions.append(Action("replace" if replace else "delete", group, inst.name, reason))
            runner = runners.get(inst.name)
            if dry_run:
                continue
            if runner is not None and not fleet.deregister(runner):
                continue  # GitHub refused (busy now): keep the VM
            to_delete.append(inst.name)
        if to_delete:
            repos = {inst.name: inst.metadata.get(REPO_KEY, "") for inst, _, _ in removals}
            fleet.delete(group, to_delete, "reconcile", repos)
            for name in to_delete:
                snap.instances[group].pop(name, None)
            # Spare VMs that went away were the capacity of jobs acked on spare capacity.
            spare_lost = [
                n for n in to_delete if n not in view.finished | view.busy | view.reserved and n not in own_names
            ]
            fleet.uncover(group, len(spare_lost), snap)

    def _still_queued(self, group: str, inst: Instance) -> bool:
        """Ask GitHub whether the job this VM was made for still waits (needs the repo recorded)."""
        fleet = self.fleet
        job_id = naming.job_of(fleet.department, group, inst.name)
        record = fleet.book.jobs.get(job_id) if job_id else None
        # After a restart the book is empty: the VM's own metadata says which repo its job is in.
        repo = (record.repo if record else "") or inst.metadata.get(REPO_KEY, "")
        if not job_id or not repo:
            return False
        waits = fleet.job_still_waits(group, repo, job_id)
        return True if waits is None else waits  # no answer: keep it queued (replacing is the safe side)

    def _check_stolen(self, group: str, inst: Instance) -> None:
        """Once per busy VM: did it run the job it was made for? (At most a few GitHub calls a pass.)"""
        if inst.name in self.fleet.book.stolen_checked or self._checks_left <= 0:
            return
        self._checks_left -= 1
        self.fleet.book.stolen_checked.add(inst.name)
        self.fleet.check_made_for(group, inst.name, inst.metadata.get(REPO_KEY, ""))

    def _orphan_runners(self, snap: Snapshot, plan: Plan, seen: set[str], dry_run: bool) -> None:
        """Runners of ours whose VM is gone: deregister (GitHub refuses if busy)."""
        names = {name for insts in snap.instances.values() for name in insts}
        assert snap.runners is not None
        listed = list(snap.instances)  # a group we could not list would make all its runners look orphaned
        orphans: list[Runner] = [
            r
            for r in snap.runners.values()
            if r.name not in names and not r.busy and naming.group_of(self.fleet.department, listed, r.name)
        ]
        for runner in orphans:
            group = naming.group_of(self.fleet.department, list(self.fleet.group_names), runner.name) or ""
            if not self._candidate(f"runner:{runner.name}", seen, dry_run):
                plan.actions.append(Action("deregister", group, runner.name, "runner has no VM", confirmed=False))
                continue
            plan.actions.append(Action("deregister", group, runner.name, "runner has no VM"))
            if not dry_run and self.fleet.deregister(runner):
                snap.runners.pop(runner.name, None)
                self.fleet.book.registered.discard(runner.name)
