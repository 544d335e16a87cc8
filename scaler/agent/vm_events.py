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

from scaler import naming
from scaler.agent import planner, trust
from scaler.agent.actions import Answer, ClearJit, Deregister, Kind, Plan, Question
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
        if not starts:
            return []
        plan = Plan()
        # A runner named X took a job: X had a config (maybe another replica's) and it is spent now.
        # A config still pending here would reach a used VM once its runner is gone: drop it.
        self.book.saw_runners({s.runner for s in starts}, self.observer.clock())
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
        fresh: list[VmEvent] = []
        for done in completions:
            present = last.get(done.runner) if last is not None else None
            if self._name_reused(done.event, present):
                log.info(
                    "late event for a VM name now used by a newer VM; not deleting it", extra=done.event.log_fields()
                )
                acks.append(done.event.ack_id)
            else:
                fresh.append(done)
        by_group: dict[str, list[VmEvent]] = {}
        for done in self._believed(fresh, last, acks):
            event = done.event
            self.book.observe_job(
                event.job_id, event.group, event.repo, "completed", self.observer.clock(), done.runner
            )
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

    def _believed(self, completions: list[VmEvent], last: dict[str, Runner] | None, acks: list[str]) -> list[VmEvent]:
        """The completions the agent believes (scaler/agent/trust.py); rejected ones are acked into ``acks``.

        The book settles the common case; the rest cost one listing per group,
        and GitHub is asked only about those whose VM does not name the job.
        """
        believed = [d for d in completions if trust.known(self.book, d.event.job_id, d.runner)]
        rest = [d for d in completions if d not in believed]
        if not rest:
            return believed
        snap = self.observer.snapshot(sorted({d.group for d in rest}), None)
        if any(naming.job_of(self.config.department, d.group, d.runner) is None for d in rest):
            # A warm name's runner may be listed busy only because the listing predates the job's
            # end: judge reused names on a fresh listing rather than hand the message back.
            last = self.observer.runners(0.0)
        answers: Mapping[int, Answer] = {}
        unknown: set[int] = set()
        for round_ in range(2):  # judge; ask GitHub what cannot be judged otherwise; judge again
            undecided: list[VmEvent] = []
            for done in rest:
                if done.group not in snap.instances:
                    self.retry_soon(done.event, RuntimeError("cannot list the VMs of the group"))
                    continue
                inst = snap.instances[done.group].get(done.runner)
                listed = last.get(done.runner) if last is not None else None
                answer = answers.get(done.event.job_id)
                verdict = trust.judge(
                    self.config.department, done.group, self.book, done.event.job_id, done.runner, inst, listed, answer
                )
                if verdict is trust.Verdict.ASK and (not done.event.repo or done.event.job_id in unknown):
                    verdict = trust.Verdict.REJECT  # no repository to ask GitHub about, or no such job there
                if verdict is trust.Verdict.ACCEPT:
                    believed.append(done)
                elif verdict is trust.Verdict.REJECT:
                    self._reject(done, acks)
                elif verdict is trust.Verdict.LATER:
                    self.retry_soon(done.event, RuntimeError("runner of a reused name still listed busy"))
                elif round_ == 0:
                    undecided.append(done)
                else:
                    self.retry_soon(done.event, RuntimeError("GitHub could not confirm the job"))
            if not undecided:
                break
            rest = undecided
            questions = [Question(d.event.job_id, d.group, d.event.repo) for d in undecided]
            answers = self.observer.ask(questions, not_found=unknown)
        return believed

    def _reject(self, done: VmEvent, acks: list[str]) -> None:
        """A completed event nothing vouches for (possibly forged): kept VM, acknowledged, counted, logged."""
        log.warning(
            "completed event not confirmed for its VM; VM kept (forged or mistaken event?)",
            extra={**done.event.log_fields(), "instance": done.runner},
        )
        self.metrics.events.labels("completed", "rejected").inc()
        acks.append(done.event.ack_id)

    def _deregister_after_completion(self, done: VmEvent, last: dict[str, Runner] | None) -> bool:
        """An ephemeral runner deregisters itself; if it is still listed idle, remove it. False: retry later.

        A runner the listing shows busy was listed before its job ended (the
        event says it ended): that listing says nothing about it now, and in a
        burst nearly every completion is in that case, so a DELETE for each
        would mostly find it gone and cost a GitHub call per job. One that did
        linger is deregistered by reconcile ("runner has no VM").
        """
        present = last.get(done.runner) if last is not None else None
        if present is None or present.busy:
            return True  # not listed (or no listing): an id from the message alone is never trusted
        runner_id = present.id
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
