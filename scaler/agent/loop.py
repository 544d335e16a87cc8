"""The agent: pull a batch, act on it, acknowledge what is durable, reconcile now and then.

Acknowledgement rule: a ``queued`` message is acked only once its job has
capacity whose JIT config has been delivered (or the job no longer waits); an
``in_progress``/``completed`` message once its effect is done. Until then the
message is *held*: its lease is extended and it is re-checked, so a burst that
outruns the GitHub budget is slowed down, never dropped. If the agent dies,
held messages simply come back from the subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent.events import BadMessage, JobEvent, parse
from scaler.agent.fleet import Fleet, api_error_kind
from scaler.agent.metrics import AgentMetrics
from scaler.agent.reconcile import Plan, Reconciler
from scaler.agent.state import Book
from scaler.backends.base import JOB_KEY, Backend, BackendError
from scaler.bus.base import BusUnavailable, Subscriber
from scaler.config import StackConfig
from scaler.github.models import GitHubApi, Runner

log = logging.getLogger("garo.agent")
RETRY_SOON = 10  # seconds before a message whose action failed comes back


@dataclass
class Held:
    event: JobEvent


@dataclass(frozen=True)
class VmEvent:
    """An in_progress or completed event of ours, acted on with the rest of its batch."""

    event: JobEvent
    group: str
    runner: str


class Agent:
    """One department's scaler. Safe to kill at any point; run several replicas if you like."""

    def __init__(
        self,
        config: StackConfig,
        backend: Backend,
        github: GitHubApi,
        subscriber: Subscriber,
        *,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
        batch_size: int = 500,
        pull_timeout: float = 1.0,
        lease_seconds: int = 60,
        hold_refresh: float = 5.0,
        jit_per_iteration: int = 50,
        verify_after: float = 120.0,
    ) -> None:
        if config.kind != "department":
            raise ValueError("the agent runs for a department stack, not the hub")
        self.config = config
        self.subscriber = subscriber
        self.clock = clock
        self.book = Book()
        self.metrics = AgentMetrics(registry)
        self.fleet = Fleet(config, backend, github, self.book, self.metrics, clock)
        self.reconciler = Reconciler(self.fleet)
        self.batch_size = batch_size
        self.pull_timeout = pull_timeout
        self.lease_seconds = lease_seconds
        self.hold_refresh = hold_refresh
        self.jit_per_iteration = jit_per_iteration
        self.verify_after = verify_after
        self.held: dict[str, Held] = {}
        self._checked: dict[str, float] = {}
        self._leases_extended = clock()
        self._next_reconcile = 0.0  # reconcile on start

    # ------------------------------------------------------------------ public API

    def reconcile(self, dry_run: bool = False) -> Plan:
        """One reconcile pass; with dry_run nothing changes and the plan says what would."""
        plan = self.reconciler.run(dry_run=dry_run)
        if not dry_run:
            self.fleet.deliver_jit(self.jit_per_iteration)
        return plan

    def run_once(self) -> int:
        """Pull and handle one batch, then settle held messages; return messages pulled."""
        try:
            messages = self.subscriber.pull(self.batch_size, self.pull_timeout)
        except BusUnavailable as exc:
            log.warning("bus unavailable", extra={"error": str(exc)[:200]})
            messages = []
        touched: set[str] = set()
        acks: list[str] = []
        completions: list[VmEvent] = []
        starts: list[VmEvent] = []
        for message in messages:
            try:
                event = parse(message)
            except BadMessage as exc:
                log.error("dropping unusable message", extra={"delivery": message.message_id, "reason": str(exc)})
                self.metrics.events.labels("unknown", "bad").inc()
                acks.append(message.ack_id)
                continue
            handled = self._handle(event, starts, completions)
            if handled:
                acks.append(event.ack_id)
            elif handled is not None and event.action == "queued":
                self.held[event.ack_id] = Held(event)
                touched.add(event.group)
        acks += self._start(starts)
        acks += self._complete(completions)
        self._ack(acks)
        self._verify_stale()
        self._settle(touched)
        self._extend_leases()
        return len(messages)

    def step(self) -> None:
        """One iteration of :meth:`run_forever`: reconcile when due, then one batch."""
        now = self.clock()
        if now >= self._next_reconcile:
            interval = self.config.reconcile_interval
            confirm_soon = min(interval, max(5.0, interval / 6))
            try:
                plan = self.reconcile()
            except Exception as exc:  # a dependency is down: try again soon, keep handling events
                log.warning("reconcile failed; retrying soon", extra={"error": api_error_kind(exc)})
                self._next_reconcile = now + confirm_soon
            else:
                # Confirm first sightings soon, so a leftover VM lives at most about one interval.
                unconfirmed = any(not a.confirmed for a in plan.actions)
                self._next_reconcile = now + (confirm_soon if unconfirmed else interval)
        self.run_once()

    def hand_back(self) -> int:
        """Return every held message to the bus now (e.g. on exit); their jobs are not lost."""
        ack_ids = list(self.held)
        self.held.clear()
        try:
            self.subscriber.modify_ack_deadline(ack_ids, 0)
        except BusUnavailable:
            pass  # their leases expire on their own
        return len(ack_ids)

    def run_forever(self, stop: threading.Event) -> None:
        """Pull, act and reconcile until ``stop`` is set; never dies on a failing dependency."""
        while not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # keep going: everything is retried from the truth
                log.exception("agent iteration failed", extra={"error": api_error_kind(exc)})
                stop.wait(1.0)

    # ------------------------------------------------------------------ events

    def _handle(self, event: JobEvent, starts: list[VmEvent], completions: list[VmEvent]) -> bool | None:
        """Act on one event; True when it can be acknowledged now, None when deferred to a batch."""
        now = self.clock()
        department = self.config.department
        known_group = event.group in self.fleet.group_names
        if event.department != department or not known_group:
            self.metrics.events.labels(event.action, "not-ours").inc()
            return True
        record = self.book.observe_job(event.job_id, event.group, event.repo, event.action, now, event.runner_name)
        if event.action == "waiting":
            self.metrics.events.labels(event.action, "ok").inc()
            return True
        if event.action == "queued":
            return record.status != "queued"  # already running or done: nothing to add
        runner = event.runner_name
        if not naming.is_ours(department, runner, self.fleet.group_names):
            self.metrics.events.labels(event.action, "not-ours").inc()
            return True
        assert runner is not None
        group = naming.group_of(department, list(self.fleet.group_names), runner) or event.group
        # in_progress and completed act on VMs: batched below, so a burst is a few cloud calls.
        (starts if event.action == "in_progress" else completions).append(VmEvent(event, group, runner))
        return None

    def _start(self, starts: list[VmEvent]) -> list[str]:
        """Record which VM runs which job; take the spent JIT configs away, concurrently. The ack ids done.

        If GitHub gave the VM made for job Y to job X, Y lost its capacity and
        needs another VM, and the VM is labelled with the job it really runs: that
        write must succeed (else the message comes back); clearing a config alone
        is best effort (reconcile clears it for online runners too).
        """
        clears: list[tuple[VmEvent, bool]] = []
        acks: list[str] = []

        def started(start: VmEvent) -> None:
            acks.append(start.event.ack_id)
            self.metrics.events.labels("in_progress", "ok").inc()
            log.info("job started", extra={**start.event.log_fields(), "instance": start.runner})

        for start in starts:
            event, group, runner = start.event, start.group, start.runner
            if event.created_at and event.started_at and event.started_at >= event.created_at:
                self.metrics.pickup.labels(group).observe(event.started_at - event.created_at)
            made_for = naming.job_of(self.config.department, group, runner)
            if made_for is not None and made_for != event.job_id:
                victim = self.book.jobs.get(made_for)
                if victim is None:
                    self.book.observe_job(made_for, group, "", "queued", self.clock())
                else:
                    self.book.requeue(made_for, self.clock())
                clears.append((start, True))
            elif runner not in self.book.jit_cleared:
                clears.append((start, False))
            else:
                started(start)
        results = self.fleet.clear_jits(
            [(s.group, s.runner, {JOB_KEY: str(s.event.job_id)} if stolen else {}) for s, stolen in clears]
        )
        for (start, stolen), exc in zip(clears, results, strict=True):
            vm_gone = isinstance(exc, BackendError) and not exc.retryable
            if stolen and exc is not None and not vm_gone:
                self._retry_soon(start.event, exc)  # the label must land; a VM that is gone needs none
            else:
                started(start)
        return acks

    def _complete(self, completions: list[VmEvent]) -> list[str]:
        """Delete the VMs of a batch's completed jobs, one call per group; the ack ids now done.

        A burst of completions thus costs a few ``deleteInstances``, not one (and
        an operation to wait for) per job. A failed delete hands its messages back.
        """
        acks: list[str] = []
        last = self.fleet.current_runners() if completions else None
        by_group: dict[str, list[VmEvent]] = {}
        for done in completions:
            present = last.get(done.runner) if last is not None else None
            if self._name_reused(done.event, present):
                log.info(
                    "late event for a VM name now used by a newer VM; not deleting it", extra=done.event.log_fields()
                )
                acks.append(done.event.ack_id)
            else:
                by_group.setdefault(done.group, []).append(done)
        for group, batch in by_group.items():
            try:
                self.fleet.delete(group, sorted({d.runner for d in batch}), "job completed")
            except Exception as exc:
                if isinstance(exc, BackendError) and not exc.retryable:
                    log.warning("cannot delete VMs of completed jobs", extra={"group": group, "error": str(exc)[:200]})
                    acks += [d.event.ack_id for d in batch]  # reconcile removes what is left
                else:
                    for done in batch:
                        self._retry_soon(done.event, exc)
                continue
            for done in batch:
                if self._deregister_after_completion(done, last):
                    self.metrics.events.labels("completed", "ok").inc()
                    log.info("job completed; VM deleted", extra={**done.event.log_fields(), "instance": done.runner})
                    acks.append(done.event.ack_id)
        return acks

    def _deregister_after_completion(self, done: VmEvent, last: dict[str, Runner] | None) -> bool:
        """An ephemeral runner deregisters itself; if it is still listed, remove it. False: retry later."""
        present = last.get(done.runner) if last is not None else None
        runner_id = present.id if present is not None else done.event.runner_id
        if runner_id is None or (last is not None and present is None):
            return True
        try:
            self.fleet.call("github", "delete_runner", self.fleet.github.delete_runner, runner_id)
        except Exception as exc:
            self._retry_soon(done.event, exc)
            return False
        return True

    @staticmethod
    def _name_reused(event: JobEvent, present: Runner | None) -> bool:
        """Does ``runner`` now name another runner than the one that ran this job?

        Warm-slot names are reused, so a late or redelivered ``completed`` (say,
        from ``garo redeliver``) could otherwise delete a VM in the middle of
        another job. A reused name without a runner yet runs nothing.
        """
        return present is not None and event.runner_id is not None and present.id != event.runner_id

    def _retry_soon(self, event: JobEvent, exc: BaseException) -> None:
        log.warning(
            "action failed; message will be redelivered", extra={**event.log_fields(), "error": api_error_kind(exc)}
        )
        self.metrics.events.labels(event.action, "retry").inc()
        try:
            self.subscriber.modify_ack_deadline([event.ack_id], RETRY_SOON)
        except BusUnavailable:
            pass

    # ------------------------------------------------------------------ held queued messages

    def _settle(self, touched: set[str]) -> None:
        """Create capacity for groups with waiting jobs, deliver JIT configs, ack what is durable."""
        now = self.clock()
        groups = set(touched)
        for held in self.held.values():
            if now - self._checked.get(held.event.group, 0.0) >= self.hold_refresh:
                groups.add(held.event.group)
        snap = None
        if groups:
            snap = self.fleet.snapshot(tuple(sorted(groups)))
            for group in sorted(groups & set(snap.instances)):
                self._checked[group] = now
                try:
                    self.fleet.ensure_capacity(group, snap)
                except Exception as exc:
                    log.warning(
                        "cannot add capacity now; will retry", extra={"group": group, "error": api_error_kind(exc)}
                    )
        if self.fleet.pending_jit:
            self.fleet.deliver_jit(self.jit_per_iteration)
        if snap is None:
            return
        pending_groups = set(self.fleet.pending_jit.values())
        covered = {group: self.fleet.covered(group, snap) for group in groups & set(snap.instances)}
        acks = []
        for ack_id, held in list(self.held.items()):
            event = held.event
            record = self.book.jobs.get(event.job_id)
            done = record is None or record.status != "queued"
            if not done and event.job_id in covered.get(event.group, {}):
                own = covered[event.group][event.job_id]
                if own and self._unconfigured(own):
                    # Its VM exists but we never gave it a config (a create that timed out but
                    # landed, or a VM from before a restart): give it one before acking.
                    self.fleet.pending_jit[own] = event.group
                # Its own VM has its config, or (covered by a spare VM) no VM of the group still waits for one.
                done = own not in self.fleet.pending_jit if own else event.group not in pending_groups
            if done:
                acks.append(ack_id)
                del self.held[ack_id]
                self.book.cover(event.job_id)
                self.metrics.events.labels("queued", "ok").inc()
        self._ack(acks)

    def _unconfigured(self, name: str) -> bool:
        book = self.fleet.book
        return name not in self.fleet.pending_jit and name not in book.delivered and name not in book.registered

    def _verify_stale(self, limit: int = 10) -> None:
        """Ask GitHub about jobs we think wait (or covered) but have not heard of for a while.

        Another replica may have seen them start; without this a replica would
        keep capacity for them forever. A job whose repository we do not know
        (learnt from a stolen VM's name) cannot be asked about and is dropped
        after its group's time-to-start.
        """
        now = self.clock()
        held = {h.event.job_id for h in self.held.values()}
        checked = 0
        for record in list(self.book.jobs.values()):
            if record.status not in ("queued", "covered") or now - record.seen_at < self.verify_after:
                continue
            if not record.repo:
                if record.status == "queued" and now - record.seen_at > self.config.group(record.group).time_to_start:
                    record.status = "covered"
                continue
            if record.id in held or checked >= limit:
                continue
            checked += 1
            # Still waiting long after we covered it: its VM was probably taken by a job
            # whose in_progress event we lost, and it counts again (job_still_waits requeues it).
            if self.fleet.job_still_waits(record.group, record.repo, record.id) is None:
                break

    def _ack(self, ack_ids: list[str]) -> None:
        if ack_ids:
            try:
                self.subscriber.ack(ack_ids)
            except BusUnavailable as exc:
                log.warning("ack failed; messages will be redelivered (harmless)", extra={"error": str(exc)[:200]})

    def _extend_leases(self) -> None:
        now = self.clock()
        if not self.held or now - self._leases_extended < self.lease_seconds / 3:
            return
        self._leases_extended = now
        try:
            self.subscriber.modify_ack_deadline(list(self.held), self.lease_seconds)
        except BusUnavailable as exc:
            log.warning("cannot extend leases", extra={"error": str(exc)[:200]})
