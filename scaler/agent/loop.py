"""The agent's loop: events -> observe -> plan -> execute, and acknowledge what is durable.

Acknowledgement rule: a ``queued`` message is acked only once its job has
capacity whose JIT config has been delivered (or the job no longer waits); an
``in_progress``/``completed`` message once its effect is done. Until then the
message is *held*: its lease is extended and it is re-checked, so a burst that
outruns the GitHub budget is slowed down, never dropped. If the agent dies,
held messages simply come back from the subscription.

Deciding is :mod:`scaler.agent.planner`'s (pure); reading is the
:class:`~scaler.agent.observe.Observer`'s (read-only); changing is the
:class:`~scaler.agent.executor.Executor`'s. This module only wires them to the bus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import planner
from scaler.agent.actions import Plan
from scaler.agent.calls import Calls, api_error_kind
from scaler.agent.classes import class_rules
from scaler.agent.events import ACTIONS, BadMessage, JobEvent, parse
from scaler.agent.executor import Executor
from scaler.agent.metrics import AgentMetrics
from scaler.agent.observe import Observer
from scaler.agent.reconcile import PASS_PERIOD, confirm_soon
from scaler.agent.state import Book
from scaler.agent.vm_events import VmEvent, VmEvents
from scaler.backends.base import Backend
from scaler.bus.base import BusUnavailable, Message, Subscriber
from scaler.config import StackConfig
from scaler.github.models import GitHubApi, RunnerGroupApi
from scaler.github.ratelimit import JitBudget
from scaler.github.runner_groups import SYNC_INTERVAL, sync_class_groups

log = logging.getLogger("garo.agent")
RETRY_SOON = 10  # seconds before a message whose action failed comes back
CONFIRM_FINISHED = 0.05  # share of the interval before a finished VM's first sighting is confirmed


@dataclass
class Held:
    event: JobEvent


def _budget_of(github: GitHubApi) -> JitBudget | None:
    from scaler.github.apps import RunnerApps
    from scaler.github.client import GitHubClient

    return github.jit_budget if isinstance(github, GitHubClient | RunnerApps) else None


class Agent:
    """One department's scaler. Safe to kill at any point; run several replicas if you like.

    ``jit_budget`` is the GitHub JIT budget to respect without blocking (by
    default the :class:`~scaler.github.client.GitHubClient`'s own).
    """

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
        jit_budget: JitBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if config.kind != "department":
            raise ValueError("the agent runs for a department stack, not the hub")
        self.config = config
        self.group_names = tuple(g.name for g in config.groups)
        self.subscriber = subscriber
        self.clock = clock
        self.book = Book()
        self.metrics = AgentMetrics(registry)
        calls = Calls(self.metrics)
        budget = jit_budget if jit_budget is not None else _budget_of(github)
        self.observer = Observer(
            config, backend, github, calls, clock, budget, on_runners=self.metrics.set_runner_versions
        )
        self.executor = Executor(config, backend, github, self.book, self.metrics, calls, clock, budget)
        self.vm_events = VmEvents(config, self.book, self.observer, self.executor, self.metrics, self._retry_soon)
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
        self.github = github
        self._classes_synced_at = float("-inf")  # the priority classes' runner groups: synced on start
        self._bus_down = False  # the last pull found the bus unavailable (see run_once)
        self._bus_down_cost = 0.0  # seconds the last failed pull took (the bus's own timeout)
        self.sleep = sleep

    # ------------------------------------------------------------------ public API

    @property
    def next_reconcile(self) -> float:
        """When :meth:`step` reconciles next; a virtual-time driver (`garo simulate`) wakes the agent then."""
        return self._next_reconcile

    def plan_reconcile(self) -> Plan:
        """Observe (GitHub: GETs only) and plan one reconcile pass; nothing changes, not even the book."""
        snap = self.observer.snapshot()
        now, budget = self.clock(), self.observer.jit_budget()
        return self.observer.answered(
            lambda answers: planner.plan_reconcile(
                self.config, self.book, snap, now, answers, jit_limit=self.jit_per_iteration, jit_budget=budget
            )
        )

    def reconcile(self, dry_run: bool = False) -> Plan:
        """One reconcile pass; with dry_run nothing changes and the plan says what would."""
        if not dry_run:
            self._sync_class_groups()
        plan = self.plan_reconcile()
        if not dry_run:
            self.executor.execute(plan)
        return plan

    def _sync_class_groups(self) -> None:
        """Create or update the priority classes' runner groups on start, then every SYNC_INTERVAL.

        A failure keeps the groups of the last sync (before the first: the
        department's group for every VM, as without runner groups) and is
        retried at the next reconcile.
        """
        wanted = class_rules(self.config)
        now = self.clock()
        if not wanted or now - self._classes_synced_at < SYNC_INTERVAL:
            return
        if not isinstance(self.github, RunnerGroupApi):
            log.warning("priority runner groups: this GitHub client cannot manage runner groups")
            self._classes_synced_at = now
            return
        try:
            self.executor.class_groups = sync_class_groups(self.github, self.config, wanted)
        except Exception as exc:  # GitHub refused or is down: never stop the agent for it
            log.warning("priority runner groups not synced; retrying next reconcile", extra={"error": str(exc)})
            return
        self._classes_synced_at = now

    def run_once(self) -> int:
        """Pull and handle one batch, then settle held messages; return messages pulled."""
        # Wait for messages no longer than until the next pass is due: a pass that starts late
        # lets a VM whose completed event was lost bill longer.
        started = self.clock()
        until_pass = max(0.0, self._next_reconcile - started)
        if self._bus_down and until_pass < self._bus_down_cost:
            # A pull of a bus that is down takes the bus's own timeout to fail: one now would
            # make the pass due sooner (a finished VM's confirming pass) late. Wait for the pass.
            self.sleep(until_pass)
            return 0
        try:
            messages = self.subscriber.pull(self.batch_size, min(self.pull_timeout, until_pass))
            self._bus_down = False
        except BusUnavailable as exc:
            log.warning("bus unavailable", extra={"error": api_error_kind(exc)})
            messages = []
            # No more bus calls this iteration: each would wait out the bus's own timeout and delay
            # the next reconcile pass. Unacknowledged messages simply come back (idempotent).
            self._bus_down, self._bus_down_cost = True, self.clock() - started
        touched: set[str] = set()
        acks: list[str] = []
        completions: list[VmEvent] = []
        starts: list[VmEvent] = []
        poison: list[str] = []
        for message in messages:
            try:
                event = parse(message)
                handled = self._handle(event, starts, completions)
            except Exception as exc:  # one record that cannot be processed must not stop the batch
                poison.append(self._poison(message, exc))
                continue
            if handled:
                acks.append(event.ack_id)
            elif handled is not None and event.action == "queued":
                self.held[event.ack_id] = Held(event)
                touched.add(event.group)
        acks += self.vm_events.start(starts)
        acks += self.vm_events.complete(completions)
        self._ack(acks)
        self._hand_back(poison)
        self._verify_stale()
        self._settle(touched)
        self._extend_leases()
        return len(messages)

    def step(self) -> None:
        """One iteration of :meth:`run_forever`: reconcile when due, then one batch."""
        now = self.clock()
        if now >= self._next_reconcile:
            self._next_reconcile = now + self._reconcile_and_schedule()
        self.run_once()

    def _reconcile_and_schedule(self) -> float:
        """One reconcile pass; the seconds until the next.

        The promise is that no VM bills more than one interval after its job
        ended, even when its ``completed`` event is lost. A job can end just
        after a pass listed the runners; the next pass sees its runner gone
        (first sighting) and a confirming pass deletes the VM. So passes start
        every :data:`PASS_PERIOD` of the interval, and a VM whose job is over is
        confirmed :data:`CONFIRM_FINISHED` of an interval later: both fit in one
        interval with room for the passes' own calls (on a newer runner listing:
        ``Book.confirmed``). Other first sightings (idle runners, VMs that never
        registered) and a group that could not be listed are looked at again
        after :func:`~scaler.agent.reconcile.confirm_soon`; such a candidate is
        confirmed only once it has been one that long (a quick pass for a
        finished VM does not trim idle VMs that the next jobs would take).
        """
        interval = float(self.config.reconcile_interval)
        period, soon = interval * PASS_PERIOD, confirm_soon(interval)
        try:
            plan = self.reconcile()
        except Exception as exc:  # a dependency is down: try again soon, keep handling events
            self.metrics.reconcile_failures.inc()
            log.warning("reconcile failed; retrying soon", extra={"error": api_error_kind(exc)})
            return soon
        if plan.finished_sightings:
            return interval * CONFIRM_FINISHED
        partial = set(self.group_names) - set(plan.vm_states)
        return soon if plan.first_sightings or partial else period

    def hand_back(self) -> int:
        """Return every held message to the bus now (e.g. on exit); their jobs are not lost."""
        ack_ids = list(self.held)
        self.held.clear()
        self._hand_back(ack_ids)
        return len(ack_ids)

    def _hand_back(self, ack_ids: list[str]) -> None:
        if not ack_ids:
            return
        try:
            self.subscriber.modify_ack_deadline(ack_ids, 0)
        except BusUnavailable:
            pass  # their leases expire on their own

    def _poison(self, message: Message, exc: Exception) -> str:
        """A message that can never be processed: counted, logged, and handed back for the dead letters.

        The agent cannot (and must not be able to) publish to the dead-letter
        topic, so it does what both buses turn into a dead letter: it hands the
        message back at once, every time, and the bus moves it to its dead
        letters after the subscription's last delivery attempt (the SQLite
        bus's ``dead_letters`` table; Pub/Sub's dead-letter policy, 5 attempts
        in infra/subscription.py). Acknowledging it would destroy the evidence.
        """
        reason = str(exc) if isinstance(exc, BadMessage) else f"cannot process it: {type(exc).__name__}"
        action = message.attributes.get("action", "")
        log.error(
            "unusable message; handing it back for the dead letters",
            extra={"delivery": message.message_id, "reason": reason, "attempt": message.delivery_attempt},
        )
        self.metrics.events.labels(action if action in ACTIONS else "unknown", "bad").inc()
        return message.ack_id

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
        if event.department != department or event.group not in self.group_names:
            self.metrics.events.labels(event.action, "not-ours").inc()
            return True
        runner = event.runner_name
        ours = runner is not None and naming.is_ours(department, runner, self.group_names)
        if event.action != "completed" or not ours:
            # A completed event naming one of our VMs is written to the book only once believed (vm_events).
            record = self.book.observe_job(
                event.job_id, event.group, event.repo, event.action, now, runner, event.workflow
            )
        if event.action == "waiting":
            self.metrics.events.labels(event.action, "ok").inc()
            return True
        if event.action == "queued":
            return record.status != "queued"  # already running or done: nothing to add
        if runner is None or not ours:
            self.metrics.events.labels(event.action, "not-ours").inc()
            return True
        group = naming.group_of(department, list(self.group_names), runner) or event.group
        # in_progress and completed act on VMs: batched below, so a burst is a few cloud calls.
        (starts if event.action == "in_progress" else completions).append(VmEvent(event, group, runner))
        return None

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
        pending_groups = set(self.book.pending_jit.values()) | self._asking_groups()
        if not groups and not pending_groups:
            return
        # Runners matter for capacity; JIT delivery alone needs only the VMs' states.
        snap = self.observer.snapshot(sorted(groups | pending_groups), 0.0 if groups else None)
        for group in groups & set(snap.instances):
            self._checked[group] = now
        held_jobs = {h.event.job_id for h in self.held.values()}
        budget = self.observer.jit_budget()
        plan = self.observer.answered(
            lambda answers: planner.plan_settle(
                self.config, self.book, snap, now, groups, held_jobs, answers, jit_limit=self.jit_per_iteration,
                jit_budget=budget,
            ),
            stop_at_failure=True,
        )  # fmt: skip
        self.executor.execute(plan)
        if not groups:
            return
        waiting = {ack_id: (h.event.job_id, h.event.group) for ack_id, h in self.held.items()}
        acks = planner.settled(self.config, self.book, snap, groups, waiting)
        for ack_id in acks:
            self.book.cover(self.held.pop(ack_id).event.job_id)
            self.metrics.events.labels("queued", "ok").inc()
        self._ack(acks)

    def _asking_groups(self) -> set[str]:
        """Groups with a VM that asked this agent for a JIT config in vain: answer it now, not at reconcile."""
        asking = self.observer.asking()
        if not asking:
            return set()
        book, names = self.book, list(self.group_names)
        fresh = [n for n in asking if n not in book.delivered and n not in book.pending_jit]
        return {g for g in (naming.group_of(self.config.department, names, n) for n in fresh) if g}

    def _verify_stale(self) -> None:
        """Ask GitHub about jobs we think wait (or covered) but have not heard of for a while."""
        now, held_jobs = self.clock(), {h.event.job_id for h in self.held.values()}
        plan = self.observer.answered(
            lambda answers: planner.plan_verify(self.config, self.book, now, held_jobs, self.verify_after, answers),
            stop_at_failure=True,
        )
        if plan.actions:
            self.executor.execute(plan)

    def _ack(self, ack_ids: list[str]) -> None:
        if ack_ids and not self._bus_down:
            try:
                self.subscriber.ack(ack_ids)
            except BusUnavailable as exc:
                log.warning("ack failed; messages will be redelivered (harmless)", extra={"error": api_error_kind(exc)})

    def _extend_leases(self) -> None:
        now = self.clock()
        if not self.held or self._bus_down or now - self._leases_extended < self.lease_seconds / 3:
            return
        self._leases_extended = now
        try:
            self.subscriber.modify_ack_deadline(list(self.held), self.lease_seconds)
        except BusUnavailable as exc:
            log.warning("cannot extend leases", extra={"error": api_error_kind(exc)})
