"""``in_progress`` and ``completed`` events: they act on VMs, a whole pulled batch at a time.

A burst of completions thus costs a few ``deleteInstances``, not one call (and
one operation to wait for) per job, and a burst of starts a few concurrent
metadata writes. The planner decides, the executor acts; this module maps the
outcome back to the messages: acknowledged when done, handed back when not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from scaler.agent import planner
from scaler.agent.actions import Answer, ClearJit, Deregister, Kind, Plan
from scaler.agent.events import JobEvent
from scaler.agent.executor import Executor
from scaler.agent.metrics import AgentMetrics
from scaler.agent.observe import RUNNERS_MAX_AGE, Observer
from scaler.agent.policy import kept_names
from scaler.agent.state import Book
from scaler.backends.base import BackendError
from scaler.config import StackConfig
from scaler.github.models import Runner

log = logging.getLogger("garo.agent")


@dataclass(frozen=True)
class VmEvent:
    """An in_progress or completed event of ours, acted on with the rest of its batch."""

    event: JobEvent
    group: str
    runner: str


class VmEvents:
    def __init__(
        self,
        config: StackConfig,
        book: Book,
        observer: Observer,
        executor: Executor,
        metrics: AgentMetrics,
        retry_soon: Callable[[JobEvent, BaseException], None],
    ) -> None:
        self.config = config
        self.book = book
        self.observer = observer
        self.executor = executor
        self.metrics = metrics
        self.retry_soon = retry_soon

    def start(self, starts: list[VmEvent]) -> list[str]:
        """Record which VM runs which job; take the spent JIT configs away, concurrently. The ack ids done.

        If GitHub gave the VM made for job Y to job X, Y lost its capacity and
        needs another VM, and the VM is labelled with the job it really runs: that
        write must succeed (else the message comes back); clearing a config alone
        is best effort (reconcile clears it for online runners too).
        """
        plan = Plan()
        for start in starts:
            event = start.event
            if event.created_at and event.started_at and event.started_at >= event.created_at:
                self.metrics.pickup.labels(start.group).observe(event.started_at - event.created_at)
            for action in planner.start_actions(self.config, self.book, start.group, start.runner, event.job_id):
                if action not in plan.actions:
                    plan.actions.append(action)
        outcome = self.executor.execute(plan)
        acks: list[str] = []
        for start in starts:
            stolen = [
                a
                for a in outcome.failed
                if isinstance(a, ClearJit) and a.name == start.runner and a.job_label == start.event.job_id
            ]
            if stolen:
                self.retry_soon(start.event, outcome.failed[stolen[0]])  # the label must land
                continue
            acks.append(start.event.ack_id)
            self.metrics.events.labels("in_progress", "ok").inc()
            log.info("job started", extra={**start.event.log_fields(), "instance": start.runner})
        return acks

    def complete(self, completions: list[VmEvent]) -> list[str]:
        """Delete the VMs of a batch's completed jobs, one call per group; the ack ids now done.

        A burst of completions thus costs a few ``deleteInstances``, not one (and
        an operation to wait for) per job. A failed delete hands its messages back.
        """
        acks: list[str] = []
        last = self.observer.runners(RUNNERS_MAX_AGE) if completions else None
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
            names = sorted({d.runner for d in batch})
            now = self.observer.clock()
            plan = self.observer.answered(partial(self._plan_deletes, group, names, now, self._kept(group, now)))
            failures = [exc for a, exc in self.executor.execute(plan).failed.items() if a.kind is Kind.DELETE]
            if failures:
                exc = failures[0]
                if isinstance(exc, BackendError) and not exc.retryable:
                    acks += [d.event.ack_id for d in batch]  # reconcile removes what is left
                else:
                    for done in batch:
                        self.retry_soon(done.event, exc)
                continue
            for done in batch:
                if self._deregister_after_completion(done, last):
                    self.metrics.events.labels("completed", "ok").inc()
                    log.info("job completed; VM deleted", extra={**done.event.log_fields(), "instance": done.runner})
                    acks.append(done.event.ack_id)
        return acks

    def _plan_deletes(
        self, group: str, names: list[str], now: float, kept: frozenset[str], answers: Mapping[int, Answer]
    ) -> Plan:
        return planner.plan_deletes(self.config, self.book, now, group, names, "job completed", answers, kept)

    def _kept(self, group: str, now: float) -> frozenset[str]:
        """VMs an operator keeps (garo-keep): a completed job does not delete them (unlisted group: none)."""
        instances = self.observer.snapshot([group], runners_max_age=None).instances.get(group, {})
        return kept_names(self.config.group(group), instances.values(), now)

    def _deregister_after_completion(self, done: VmEvent, last: dict[str, Runner] | None) -> bool:
        """An ephemeral runner deregisters itself; if it is still listed, remove it. False: retry later."""
        present = last.get(done.runner) if last is not None else None
        runner_id = present.id if present is not None else done.event.runner_id
        if runner_id is None or (last is not None and present is None):
            return True
        action = Deregister(group=done.group, name=done.runner, reason="job completed", runner_id=runner_id)
        failed = self.executor.execute(Plan([action])).failed
        if action in failed:
            self.retry_soon(done.event, failed[action])
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
