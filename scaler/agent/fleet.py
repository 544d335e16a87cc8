"""The agent's view of one department's fleet, and the few ways it changes it.

A :class:`Snapshot` is read once per batch or pass (one ``list`` per group, one
``list_runners`` for the department) and updated locally as the agent acts, so a
burst costs a handful of API calls rather than one per job. Every call goes
through :meth:`Fleet.call`, which counts calls and errors by kind for metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from scaler import naming
from scaler.agent.metrics import AgentMetrics
from scaler.agent.policy import CapacityPlan, plan_capacity
from scaler.agent.state import Book, JobRecord
from scaler.backends.base import JIT_KEY, JOB_KEY, REPO_KEY, STATE_LABEL, Backend, BackendError, Instance, InstanceState
from scaler.config import StackConfig
from scaler.github.models import GitHubApi, JitConfig, Runner

log = logging.getLogger("garo.agent")
T = TypeVar("T")
ACTIVE = frozenset({InstanceState.CREATING, InstanceState.RUNNING, InstanceState.RESUMING})
RUNNERS_MAX_AGE = 5.0  # seconds a runner listing serves event handling (it pages through the org)
# Concurrent metadata writes during JIT delivery (each waits ~2 s for its zonal operation).
METADATA_WRITERS = 16


@dataclass
class Snapshot:
    """Runners (ours, by name; None if GitHub could not be read) and instances per group.

    A group whose VMs could not be listed is missing from ``instances``: act on it next time.
    """

    runners: dict[str, Runner] | None
    instances: dict[str, dict[str, Instance]] = field(default_factory=dict)


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

    @property
    def demand(self) -> int:
        """Jobs waiting for a runner, as the capacity policy counts them."""
        return len(self.queued) + len(self.reserved)

    @property
    def spare(self) -> int:
        """Active VMs not busy and not spoken for by a job."""
        return len(self.active) - len(self.busy) - len(self.own) - len(self.reserved)


def api_error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics (never the message: it may quote a request)."""
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int):
        return str(status)
    if isinstance(exc, BackendError):
        return "retryable" if exc.retryable else "fatal"
    return type(exc).__name__


class Fleet:
    def __init__(
        self,
        config: StackConfig,
        backend: Backend,
        github: GitHubApi,
        book: Book,
        metrics: AgentMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.backend = backend
        self.github = github
        self.book = book
        self.metrics = metrics
        self.clock = clock
        self.department = config.department
        self.group_names = tuple(g.name for g in config.groups)
        # instance name -> group, for VMs that exist but still need their JIT config
        self.pending_jit: dict[str, str] = {}
        # GitHub's runners (ours) as last read; None until read or when the read failed
        self.last_runners: dict[str, Runner] | None = None
        self._runners_at = float("-inf")

    # ------------------------------------------------------------------ calls

    def call(self, api: str, name: str, fn: Callable[..., T], *args: Any) -> T:
        self.metrics.api_calls.labels(api, name).inc()
        try:
            return fn(*args)
        except Exception as exc:
            self.metrics.api_errors.labels(api, name, api_error_kind(exc)).inc()
            raise

    def snapshot(self, groups: tuple[str, ...] | None = None) -> Snapshot:
        """Read runners once and instances of the given groups (all by default)."""
        snap = Snapshot(self.current_runners(max_age=0.0))
        for group in groups if groups is not None else self.group_names:
            try:
                snap.instances[group] = {i.name: i for i in self.call("compute", "list", self.backend.list, group)}
            except Exception as exc:  # one broken group (a misnamed MIG, ...) must not stop the others
                log.warning(
                    "cannot list the group's VMs; skipping it this time",
                    extra={"group": group, "error": api_error_kind(exc)},
                )
        return snap

    def current_runners(self, max_age: float = RUNNERS_MAX_AGE) -> dict[str, Runner] | None:
        """Our runners by name as GitHub lists them, at most ``max_age`` seconds old; None if unknown."""
        now = self.clock()
        if self.last_runners is not None and now - self._runners_at <= max_age:
            return self.last_runners
        try:
            runners = self.call("github", "list_runners", self.github.list_runners)
        except Exception as exc:
            log.warning("cannot list runners; acting on what the book knows", extra={"error": api_error_kind(exc)})
            self.last_runners = None
            return None
        self.last_runners = {r.name: r for r in runners if naming.is_ours(self.department, r.name, self.group_names)}
        self._runners_at = now
        self.book.registered.update(self.last_runners)
        return self.last_runners

    # ------------------------------------------------------------------ views

    def view(self, group: str, snap: Snapshot) -> GroupView:
        instances = snap.instances[group].values()
        finished = frozenset(i.name for i in instances if i.state in ACTIVE and self.finished(i, snap))
        active = tuple(i for i in instances if i.state in ACTIVE and i.name not in finished)
        running_on = self.book.running_on()
        busy: set[str] = set()
        for inst in active:
            runner = snap.runners.get(inst.name) if snap.runners is not None else None
            if (runner is not None and runner.busy) or (
                inst.name in running_on and (snap.runners is None or runner is not None)
            ):
                busy.add(inst.name)
        queued = tuple(self.book.queued(group))
        idle_names = {i.name for i in active if i.name not in busy}
        # A job's own VM: any idle VM named after it (generations need not be contiguous:
        # some were deleted, some ran another job and are spent).
        spent = self.spent_names(group, snap)
        idle_for: dict[int, str] = {}
        for name in sorted(idle_names - spent):
            made_for = naming.job_of(self.department, group, name)
            if made_for is not None:
                idle_for.setdefault(made_for, name)
        own = {job.id: idle_for[job.id] for job in queued if job.id in idle_for}
        standby = tuple(i for i in instances if i.state is InstanceState.STANDBY)
        own_names = set(own.values())
        reserved = set()
        for inst in active:
            if inst.name in busy or inst.name in own_names:
                continue
            job_id = naming.job_of(self.department, group, inst.name)
            record = self.book.jobs.get(job_id) if job_id is not None else None
            if job_id is None or (record is not None and record.status in ("in_progress", "completed")):
                continue
            # A JIT runner is listed (offline) from the moment its config is generated: only an
            # online runner means the VM has booted and GitHub may hand it any job.
            runner = snap.runners.get(inst.name) if snap.runners is not None else None
            online = (
                runner.status == "online"
                if runner is not None
                else snap.runners is None and inst.name in self.book.registered
            )
            if not online and inst.labels.get(STATE_LABEL) not in ("done", "failed"):
                reserved.add(inst.name)
        return GroupView(active, standby, frozenset(busy), queued, own, frozenset(reserved), finished)

    def uncover(self, group: str, count: int, snap: Snapshot) -> None:
        """``count`` spare VMs are gone: as many jobs covered by spare capacity wait again, oldest first.

        A job acknowledged because an idle VM made for another job could take
        it has no VM of its own; when that VM is deleted (never registered,
        runner offline, ...) the job must count as waiting again, or the group
        would think it has capacity it no longer has.
        """
        with_own_vm = {naming.job_of(self.department, group, name) for name in snap.instances[group]}
        covered = sorted(
            (
                j
                for j in self.book.jobs.values()
                # Without a repo the job was only inferred from a VM's name and parked as covered
                # because it cannot be checked: not a job whose message we acknowledged.
                if j.group == group and j.status == "covered" and j.repo and j.id not in with_own_vm
            ),
            key=lambda j: (j.seen_at, j.id),
        )
        for record in covered[: max(0, count)]:
            log.info("job lost the spare VM that covered it; it waits again", extra={"job_id": record.id})
            self.book.requeue(record.id, self.clock())

    def spent_names(self, group: str, snap: Snapshot) -> set[str]:
        """Names never to give a new VM: they ran a job, or GitHub still has their runner without a VM.

        Reusing such a name would let a late ``completed`` event of the job that
        ran on the old VM delete the new one, and GitHub refuses a JIT config for
        a name that is still registered (409).
        """
        spent = {job.runner_name for job in self.book.jobs.values() if job.runner_name} | set(self.book.spent)
        if snap.runners is not None:
            spent |= {name for name in snap.runners if name not in snap.instances[group]}
        return spent

    def finished(self, inst: Instance, snap: Snapshot) -> bool:
        """The VM's one job is over (it says so, or its runner came and went); it only awaits deletion."""
        if inst.labels.get(STATE_LABEL) in ("done", "failed"):
            return True
        runner = snap.runners.get(inst.name) if snap.runners is not None else None
        if snap.runners is None or runner is not None or inst.name not in self.book.registered:
            return False
        job_id = self.book.running_on().get(inst.name)
        if job_id is not None:
            # We think it runs a job: a runner missing from one listing (pages shift as runners
            # come and go) is not proof. Ask GitHub about that job; its answer is recorded.
            record = self.book.jobs[job_id]
            if record.repo:
                self.job_still_waits(inst.group, record.repo, job_id)
            return inst.name not in self.book.running_on()
        return True

    def covered(self, group: str, snap: Snapshot) -> dict[int, str | None]:
        """Queued jobs that have a VM to run on: their own idle VM, else the oldest get the spare ones."""
        view = self.view(group, snap)
        others = [j.id for j in view.queued if j.id not in view.own]
        covered: dict[int, str | None] = dict(view.own)
        covered.update((job_id, None) for job_id in others[: max(0, view.spare)])
        return covered

    # ------------------------------------------------------------------ capacity

    def _names_to_create(self, group: str, snap: Snapshot, view: GroupView, count: int) -> dict[str, dict[str, str]]:
        """Deterministic names (so replicas agree): queued jobs first, then warm slots."""
        taken = set(snap.instances[group]) | self.spent_names(group, snap)
        chosen: dict[str, dict[str, str]] = {}
        for job in view.queued:
            if len(chosen) >= count:
                return chosen
            if job.id in view.own:
                continue
            for gen in range(100):
                name = naming.instance_name(self.department, group, job.id, gen)
                if name not in taken:
                    chosen[name] = {JOB_KEY: str(job.id), REPO_KEY: job.repo}
                    break
        slot = 0
        while len(chosen) < count:
            name = naming.warm_name(self.department, group, slot)
            if name not in taken:
                chosen[name] = {JOB_KEY: ""}
            slot += 1
        return chosen

    def ensure_capacity(self, group: str, snap: Snapshot, *, dry_run: bool = False) -> tuple[CapacityPlan, list[str]]:
        """Resume standby VMs, then create named VMs, up to the policy's target.

        Returns the plan and the names it created or resumed (all queued for a
        JIT config). Capacity failures leave the names uncreated: the jobs stay
        uncovered and their messages unacknowledged, so they are retried.
        """
        spec = self.config.group(group)
        view = self.view(group, snap)
        plan = plan_capacity(
            spec,
            active=len(view.active),
            finished=len(view.finished),
            busy=len(view.busy),
            queued=view.demand,
            standby=len(view.standby),
            now=self.clock(),
        )
        self.metrics.desired.labels(group).set(plan.desired)
        self.metrics.queued_jobs.labels(group).set(view.demand)
        if dry_run or plan.missing == 0:
            return plan, []
        added: list[str] = []
        now = self.clock()
        if plan.resume:
            resumed = self.call("compute", "resume_standby", self.backend.resume_standby, group, plan.resume)
            for name in resumed:
                old = snap.instances[group].get(name)
                inst = old or Instance(name, group, InstanceState.RESUMING, now)
                snap.instances[group][name] = replace(inst, state=InstanceState.RESUMING)
                added.append(name)
            self.metrics.actions.labels(group, "resume").inc(len(resumed))
        wanted = self._names_to_create(group, snap, view, plan.missing - len(added))
        if wanted:
            result = self.call("compute", "create", self.backend.create, group, list(wanted), wanted)
            fresh = [n for n in result.created if n not in snap.instances[group]]
            for name in result.created:
                snap.instances[group].setdefault(name, Instance(name, group, InstanceState.CREATING, now))
            added.extend(fresh)
            self.metrics.actions.labels(group, "create").inc(len(fresh))
            if result.failed:
                log.warning(
                    "cloud refused some creates; will retry",
                    extra={
                        "group": group,
                        "count": len(result.failed),
                        "reason": sorted({str(f.reason) for f in result.failed.values()}),
                    },
                )
            log.info("capacity requested", extra={"group": group, "count": len(added), "names": added[:20]})
        for name in added:
            self.pending_jit[name] = group
        return plan, added

    # ------------------------------------------------------------------ JIT delivery

    def deliver_jit(self, limit: int = 50) -> int:
        """Give pending VMs their single-use runner config; stop at the first GitHub refusal.

        The config is generated only for a VM that exists, named after it, and
        written to that VM's metadata only. If writing fails the runner is
        deregistered again, so the unused config is dead and the name is free.

        Configs are generated one by one (GitHub's budget is the limit there),
        then written concurrently: each write waits for its own zonal operation
        (~2 s on GCE), which made a burst of 100 VMs take minutes when serial.
        """
        generated: list[tuple[str, str, JitConfig]] = []
        refused_groups: set[str] = set()
        for name, group in self._ready_for_jit(limit):
            if not self._jit_budget_left():
                break  # generating now would block the loop until the budget refills
            if group in refused_groups:
                continue
            spec = self.config.group(group)
            try:
                jit = self.call(
                    "github",
                    "generate_jit_config",
                    self.github.generate_jit_config,
                    name,
                    spec.runner_group_id,
                    list(spec.labels),
                )
            except Exception as exc:
                log.warning(
                    "JIT config not available yet",
                    extra={"instance": name, "group": group, "error": api_error_kind(exc)},
                )
                status = getattr(exc, "status", None)
                if status == 409:
                    # The name is registered already: another replica configured this VM (or our
                    # retried POST did). Not ours to redo; reconcile replaces it if it never registers.
                    self.pending_jit.pop(name, None)
                    continue
                if status == 422:
                    refused_groups.add(group)  # the group's runner group or labels: the others may work
                    continue
                break  # budget, secondary rate limit or 5xx: keep everything pending, do not drop
            generated.append((name, group, jit))
        done = 0
        writes = [(group, name, {JIT_KEY: jit.encoded}) for name, group, jit in generated]
        for (name, _group, jit), failure in zip(generated, self.write_metadata(writes), strict=True):
            if failure is not None:
                log.warning(
                    "cannot deliver JIT config; revoking it", extra={"instance": name, "error": api_error_kind(failure)}
                )
                self._quiet_deregister(jit.runner_id)
                if isinstance(failure, BackendError) and not failure.retryable:
                    self.pending_jit.pop(name, None)  # the VM is gone; reconcile decides what next
                continue
            self.pending_jit.pop(name, None)
            self.book.delivered[name] = self.clock()
            done += 1
        generated.clear()  # drop the secrets as soon as they are written
        writes.clear()
        return done

    def _ready_for_jit(self, limit: int) -> list[tuple[str, str]]:
        """Pending VMs that exist and are past creation, oldest request first, at most ``limit``.

        On GCE a VM is listed before it exists (``createInstances`` is done, the
        instance is not); generating a config then would only burn GitHub budget
        on a write that must fail and a runner that must be revoked.
        """
        ready: list[tuple[str, str]] = []
        states: dict[str, dict[str, InstanceState]] = {}
        for name, group in list(self.pending_jit.items()):
            if len(ready) >= limit:
                break
            if group not in states:
                try:
                    instances = self.call("compute", "list", self.backend.list, group)
                except Exception as exc:
                    log.warning(
                        "cannot list VMs for JIT delivery", extra={"group": group, "error": api_error_kind(exc)}
                    )
                    instances = []
                states[group] = {i.name: i.state for i in instances}
            if states[group].get(name) in (InstanceState.RUNNING, InstanceState.RESUMING):
                ready.append((name, group))
        return ready

    def _jit_budget_left(self) -> bool:
        # GitHubClient exposes its JIT budget; other GitHubApi implementations may not.
        remaining = getattr(getattr(self.github, "jit_budget", None), "remaining", None)
        return remaining is None or remaining() > 0

    def write_metadata(self, writes: Sequence[tuple[str, str, Mapping[str, str]]]) -> list[Exception | None]:
        """Write (group, name, items) to VMs' metadata, up to METADATA_WRITERS at once; the error of each.

        Each write waits for its own zonal operation (~2 s on GCE): one after the
        other, a burst of them would block the agent past its messages' leases.
        """

        def write(item: tuple[str, str, Mapping[str, str]]) -> Exception | None:
            group, name, items = item
            try:
                self.call("compute", "set_metadata", self.backend.set_metadata, group, name, items)
            except Exception as exc:
                return exc
            return None

        if len(writes) <= 1:
            return [write(item) for item in writes]
        with ThreadPoolExecutor(min(METADATA_WRITERS, len(writes)), thread_name_prefix="garo-metadata") as pool:
            return list(pool.map(write, writes))

    def clear_jits(self, clears: Sequence[tuple[str, str, Mapping[str, str]]]) -> list[Exception | None]:
        """Take used JIT configs out of VMs' metadata (with extra items); the error of each, None if done.

        The boot agent on GCE cannot delete its own instance metadata, so the
        config would stay readable on the VM (and to anyone who may read the
        instance) for the VM's whole life. Once its runner is running the config
        is spent: GitHub refuses a second registration with it, so removing it is
        defence in depth, done on ``in_progress`` and for online runners.
        """
        results = self.write_metadata([(group, name, {JIT_KEY: "", **extra}) for group, name, extra in clears])
        for (_group, name, _extra), exc in zip(clears, results, strict=True):
            if exc is None or (isinstance(exc, BackendError) and not exc.retryable):  # done, or the VM is gone
                self.book.jit_cleared.add(name)
            if exc is not None:
                log.warning("cannot clear JIT config yet", extra={"instance": name, "error": api_error_kind(exc)})
        return results

    # ------------------------------------------------------------------ removal

    def _quiet_deregister(self, runner_id: int) -> bool:
        try:
            self.call("github", "delete_runner", self.github.delete_runner, runner_id)
            return True
        except Exception as exc:
            log.warning(
                "cannot deregister runner", extra={"error": api_error_kind(exc), "fields": {"runner_id": runner_id}}
            )
            return False

    def deregister(self, runner: Runner) -> bool:
        """Remove a runner from GitHub; False if GitHub refused (e.g. 422: it just took a job)."""
        return self._quiet_deregister(runner.id)

    def check_made_for(self, group: str, name: str, repo: str = "") -> None:
        """Was the job this VM was made for left without one (another job took the VM)?

        We only learn of such a "stolen" VM from the thief's in_progress event; if
        that was lost, the job we acknowledged would wait forever. So before a VM
        made for job Y goes away (or when it is busy and we never saw Y start),
        ask GitHub about Y once, only for jobs this agent covered.
        """
        made_for = naming.job_of(self.department, group, name)
        record = self.book.jobs.get(made_for) if made_for is not None else None
        if record is None and made_for is not None and repo:
            # After a restart the book is empty; the VM's own metadata says which job it was made for.
            record = self.book.observe_job(made_for, group, repo, "covered", self.clock())
        if record is None or record.status != "covered" or not record.repo:
            return
        if self.job_still_waits(group, record.repo, record.id):
            log.info(
                "job's VM was taken by another job; it needs another", extra={"job_id": record.id, "instance": name}
            )
            self.book.spent[name] = self.clock()

    def job_still_waits(self, group: str, repo: str, job_id: int) -> bool | None:
        """Ask GitHub; record what it says. True: queued (it needs capacity again); None: no answer.

        A job ``waiting`` for an environment's approval does not wait for a runner yet.
        """
        try:
            job = self.call("github", "get_job", self.github.get_job, repo, job_id)
        except Exception as exc:
            log.warning("cannot check job", extra={"job_id": job_id, "error": api_error_kind(exc)})
            return None
        status = "queued" if job.status in ("queued", "pending", "requested") else job.status
        self.book.observe_job(job_id, group, repo, status, self.clock(), job.runner_name)
        if status == "queued":
            self.book.requeue(job_id, self.clock())
        return status == "queued"

    def delete(self, group: str, names: list[str], reason: str, repos: Mapping[str, str] | None = None) -> None:
        """Delete VMs by name; first make sure the jobs they were made for are not left without one.

        ``repos`` (name -> repository, from the VMs' own metadata) lets an agent
        that restarted ask GitHub about jobs its empty book does not know.
        """
        if not names:
            return
        for name in names:
            self.check_made_for(group, name, (repos or {}).get(name, ""))
        self.call("compute", "delete", self.backend.delete, group, names)
        for name in names:
            self.pending_jit.pop(name, None)
            self.book.forget_instance(name)
        # A job running on a deleted VM is over (or lost with it); a later VM may reuse the name.
        for record in self.book.jobs.values():
            if record.status == "in_progress" and record.runner_name in names:
                record.status = "completed"
        self.metrics.actions.labels(group, "delete").inc(len(names))
        log.info("deleted VMs", extra={"group": group, "names": names[:20], "count": len(names), "reason": reason})
