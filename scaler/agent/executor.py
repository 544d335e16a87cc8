"""The executor: carry a plan's actions out against the cloud and GitHub, and record what happened.

The only part of the agent that changes anything. It batches what the APIs
batch (one ``create`` or ``delete`` call per group and run of actions), writes
metadata up to :data:`METADATA_WRITERS` at once (on GCE each write reads and
writes that VM's metadata: two calls), counts every call for metrics, and changes the
book only for what succeeded. A failed action is logged and reported in the
:class:`Outcome`; everything is retried from the truth on a later pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from scaler.agent.actions import (
    Action,
    ClearJit,
    Create,
    Delete,
    DeliverJit,
    Deregister,
    Kind,
    Plan,
    Resume,
    remember,
)
from scaler.agent.calls import Calls, api_error_kind, github_status
from scaler.agent.classes import runner_group_for
from scaler.agent.metrics import AgentMetrics
from scaler.agent.state import Book
from scaler.backends.base import JIT_KEY, JOB_KEY, Backend, BackendError, CreateFailure
from scaler.backends.jit_vault import JitVault
from scaler.config import StackConfig
from scaler.github.models import GitHubApi, JitConfig
from scaler.github.ratelimit import JitBudget
from scaler.github.runner_groups import ClassGroups

log = logging.getLogger("garo.agent")
METADATA_WRITERS = 16  # concurrent metadata writes (JIT delivery and clearing)
QUEUE_REFRESH = 1.0  # seconds between two publications of the JIT queue's expected times (publish_jit_queue)
BATCHED = (Kind.CLEAR_JIT, Kind.DELETE, Kind.CREATE, Kind.DELIVER_JIT)


@dataclass
class Outcome:
    """What an executed plan did: actions done, failed (with the error), names the cloud refused or added."""

    done: list[Action] = field(default_factory=list)
    failed: dict[Action, BaseException] = field(default_factory=dict)
    refused: dict[str, CreateFailure] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # created or resumed: each now waits for its JIT config


class Executor:
    def __init__(
        self,
        config: StackConfig,
        backend: Backend,
        github: GitHubApi,
        book: Book,
        metrics: AgentMetrics,
        calls: Calls,
        clock: Callable[[], float],
        jit_budget: JitBudget | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.github = github
        self.book = book
        self.metrics = metrics
        self.calls = calls
        self.clock = clock
        self.budget = jit_budget
        # The priority classes' runner groups (set by the agent's sync; empty: the department's groups).
        self.class_groups = ClassGroups()
        self._queue_published: tuple[float, int] = (float("-inf"), -1)  # (when, how many were pending)

    def execute(self, plan: Plan) -> Outcome:
        """Carry out the plan's actions in order; never raises for a failed action (see the outcome)."""
        out = Outcome()
        self.book.saw_runners(plan.registered, self.clock())
        actions = plan.actions
        i = 0
        while i < len(actions):
            j = i + 1
            kind = actions[i].kind
            if kind is Kind.CREATE and actions[i].group in self._failed_deletes(out):
                # Sized as if the group's deletions had happened: creating now could exceed max.
                i += 1
                continue
            if kind in BATCHED:
                same_group = kind in (Kind.DELETE, Kind.CREATE)
                while j < len(actions) and actions[j].kind is kind:
                    if same_group and actions[j].group != actions[i].group:
                        break
                    j += 1
            self._run(actions[i:j], out)
            i = j
        for group, desired in plan.desired.items():
            self.metrics.desired.labels(group).set(desired)
        for group, demand in plan.demand.items():
            self.metrics.queued_jobs.labels(group).set(demand)
        for group, states in plan.vm_states.items():
            self.metrics.set_vms(group, states)
        for group, count in plan.kept.items():
            self.metrics.kept_vms.labels(group).set(count)
        for group, (vm_age, job_age) in plan.ages.items():
            self.metrics.set_ages(group, vm_age, job_age, self.config.group(group).time_to_live)
        self.publish_jit_queue()
        if plan.reconcile:
            self.book.end_pass(plan.seen, plan.sightings)
            self.book.prune(self.clock())
            self.metrics.reconcile_passes.inc()
            self.metrics.reconcile_success.set(self.clock())
        return out

    @staticmethod
    def _failed_deletes(out: Outcome) -> set[str]:
        return {a.group for a, exc in out.failed.items() if a.kind is Kind.DELETE}

    def _run(self, run: Sequence[Action], out: Outcome) -> None:
        first = run[0]
        if isinstance(first, ClearJit):
            self._clear_jits([a for a in run if isinstance(a, ClearJit)], out)
        elif isinstance(first, Delete):
            self._delete([a for a in run if isinstance(a, Delete)], out)
        elif isinstance(first, Create):
            self._create([a for a in run if isinstance(a, Create)], out)
        elif isinstance(first, DeliverJit):
            self._deliver([a for a in run if isinstance(a, DeliverJit)], out)
        elif isinstance(first, Deregister):
            if self._deregister(first.runner_id, out, first):
                self._done(first, out)
        elif isinstance(first, Resume):
            self._resume(first, out)
        else:  # record, spend, requeue, mark, queue-jit: the book only
            if first.kind in (Kind.SPEND, Kind.REQUEUE):
                log.info(first.reason, extra={"group": first.group, "instance": first.name})
            self._done(first, out)

    def _done(self, action: Action, out: Outcome) -> None:
        remember(self.book, action, self.clock())
        out.done.append(action)

    def _deregister(self, runner_id: int, out: Outcome, action: Action) -> bool:
        try:
            self.calls("github", "delete_runner", self.github.delete_runner, runner_id)
        except Exception as exc:
            log.warning("cannot deregister runner", extra={"error": api_error_kind(exc), "instance": action.name})
            out.failed[action] = exc
            return False
        return True

    def _delete(self, run: list[Delete], out: Outcome) -> None:
        group = run[0].group
        # Deregister first: GitHub refuses (422) for a runner that just took a job, and that VM stays.
        going = [a for a in run if a.runner_id is None or self._deregister(a.runner_id, out, a)]
        if not going:
            return
        names = [a.name for a in going]
        try:
            self.calls("compute", "delete", self.backend.delete, group, names)
        except Exception as exc:
            log.warning("cannot delete VMs", extra={"group": group, "error": api_error_kind(exc)})
            out.failed.update((a, exc) for a in going)
            return
        for action in going:
            self._done(action, out)
        self.metrics.actions.labels(group, "delete").inc(len(names))
        reasons = sorted({a.reason for a in going})
        log.info("deleted VMs", extra={"group": group, "names": names[:20], "count": len(names), "reason": reasons})

    def _resume(self, action: Resume, out: Outcome) -> None:
        try:
            names = self.calls("compute", "resume_standby", self.backend.resume_standby, action.group, action.count)
        except Exception as exc:
            log.warning("cannot resume VMs now", extra={"group": action.group, "error": api_error_kind(exc)})
            out.failed[action] = exc
            return
        for name in names:
            self.book.pending_jit[name] = action.group
        out.added.extend(names)
        out.done.append(action)
        self.metrics.actions.labels(action.group, "resume").inc(len(names))

    def _create(self, run: list[Create], out: Outcome) -> None:
        group = run[0].group
        metadata = {a.name: a.metadata() for a in run}
        try:
            result = self.calls("compute", "create", self.backend.create, group, list(metadata), metadata)
        except Exception as exc:
            log.warning("cannot add capacity now; will retry", extra={"group": group, "error": api_error_kind(exc)})
            out.failed.update((a, exc) for a in run)
            return
        created, existed = set(result.created), set(result.existed)
        for action in run:
            if action.name in existed:
                # Another replica (or an earlier attempt) made it: its maker configures it. Taking it
                # as ours could give a used VM a second config after its runner came and went.
                out.done.append(action)
            elif action.name in created:
                self._done(action, out)
                out.added.append(action.name)
            elif action.name in result.failed:
                out.refused[action.name] = result.failed[action.name]
        self.metrics.actions.labels(group, "create").inc(len((created - existed) & set(metadata)))
        if result.failed:
            reasons = sorted({str(f.reason) for f in result.failed.values()})
            log.warning(
                "cloud refused some creates; will retry",
                extra={"group": group, "count": len(result.failed), "reason": reasons},
            )
        log.info("capacity requested", extra={"group": group, "count": len(created), "names": sorted(created)[:20]})

    def _deliver(self, run: list[DeliverJit], out: Outcome) -> None:
        """Generate configs (GitHub's budget is the limit), then write them concurrently.

        Generation is serial per App, as GitHub asks of one installation; with
        several runner Apps (:class:`~scaler.github.apps.RunnerApps`) one
        request per App is in flight at a time. The config is generated only
        for a VM that exists, named after it, and written to that VM's metadata
        only. If writing fails the runner is deregistered again, so the unused
        config is dead and the name is free.
        """
        generated: list[tuple[DeliverJit, JitConfig]] = []
        refused_groups: set[str] = set()
        width = max(1, int(getattr(self.github, "jit_concurrency", 1)))
        pending = list(run)
        stop = False
        while pending and not stop:
            room = width if self.budget is None else min(width, self.budget.remaining())
            if room <= 0:
                break  # generating now would block the loop until the budget refills
            batch: list[DeliverJit] = []
            while pending and len(batch) < room:
                action = pending.pop(0)
                if action.group not in refused_groups:
                    batch.append(action)
            for action, result in zip(batch, self._generate(batch, width), strict=True):
                if isinstance(result, JitConfig):
                    generated.append((action, result))
                    continue
                out.failed[action] = result
                log.warning(
                    "JIT config not available yet",
                    extra={"instance": action.name, "group": action.group, "error": api_error_kind(result)},
                )
                status = github_status(result)
                if status == 409:
                    # The name is registered already: another replica configured this VM (or our
                    # retried POST did). Not ours to redo; reconcile replaces it if it never registers.
                    # Remember that it has a config: once its runner is gone it ran (views.finished),
                    # and it must never be given a second one (a used VM would wait for timeToStart).
                    self.book.pending_jit.pop(action.name, None)
                    self.book.delivered.setdefault(action.name, self.clock())
                elif status == 422:
                    refused_groups.add(action.group)  # the group's runner group or labels: the others may work
                else:
                    stop = True  # budget, secondary rate limit or 5xx: keep everything pending, do not drop
        writes = [(a.group, a.name, {JIT_KEY: jit.encoded}) for a, jit in generated]
        for (action, jit), failure in zip(generated, self.write_metadata(writes), strict=True):
            if failure is None:
                self._done(action, out)
                continue
            out.failed[action] = failure
            log.warning(
                "cannot deliver JIT config; revoking it",
                extra={"instance": action.name, "error": api_error_kind(failure)},
            )
            self._deregister(jit.runner_id, out, action)
            if isinstance(failure, BackendError) and not failure.retryable:
                self.book.pending_jit.pop(action.name, None)  # the VM is gone; reconcile decides what next
        generated.clear()  # drop the secrets as soon as they are written
        writes.clear()

    def publish_jit_queue(self) -> None:
        """Tell the backend's JIT vault when each awaited config should be there, for the VMs that ask early.

        The pending VMs are served oldest first, each as soon as GitHub's budget
        has room (:meth:`JitBudget.etas`); the endpoint turns that into the
        Retry-After of its 404s. At most once a :data:`QUEUE_REFRESH`, or when
        the queue's length changed: an estimate, never a promise.
        """
        vault = getattr(self.backend, "jit_vault", None)
        if not isinstance(vault, JitVault) or self.budget is None:
            return
        now, pending = self.clock(), self.book.pending_jit
        last, size = self._queue_published
        if len(pending) == size and now - last < QUEUE_REFRESH:
            return
        self._queue_published = (now, len(pending))
        at = vault.clock()
        vault.expect({name: at + eta for name, eta in zip(pending, self.budget.etas(len(pending)), strict=True)})

    def _generate(self, batch: Sequence[DeliverJit], width: int) -> list[JitConfig | Exception]:
        """One JIT config per action, up to ``width`` requests at once; the config or the error of each."""

        def generate(action: DeliverJit) -> JitConfig | Exception:
            spec = self.config.group(action.group)
            runner_group = runner_group_for(self.config, self.class_groups, action.group, self.book, action.name)
            try:
                jit: JitConfig = self.calls(
                    "github", "generate_jit_config", self.github.generate_jit_config, action.name,
                    runner_group, list(spec.labels),
                )  # fmt: skip
            except Exception as exc:
                return exc
            return jit

        if width <= 1 or len(batch) <= 1:
            return [generate(action) for action in batch]
        with ThreadPoolExecutor(min(width, len(batch)), thread_name_prefix="garo-jit") as pool:
            return list(pool.map(generate, batch))

    def _clear_jits(self, run: list[ClearJit], out: Outcome) -> None:
        """Take used JIT configs out of VMs' metadata (and label a stolen VM with the job it runs).

        The boot agent on GCE cannot delete its own instance metadata, so the
        config would stay readable on the VM for its whole life. Once its runner
        is running the config is spent (GitHub refuses a second registration),
        so removing it is defence in depth. A VM that is gone needs nothing.
        """
        writes = [
            (a.group, a.name, {JIT_KEY: "", **({JOB_KEY: str(a.job_label)} if a.job_label is not None else {})})
            for a in run
        ]
        for action, exc in zip(run, self.write_metadata(writes), strict=True):
            if exc is None or (isinstance(exc, BackendError) and not exc.retryable):
                self._done(action, out)
            else:
                out.failed[action] = exc
                log.warning(
                    "cannot clear JIT config yet", extra={"instance": action.name, "error": api_error_kind(exc)}
                )

    def write_metadata(self, writes: Sequence[tuple[str, str, Mapping[str, str]]]) -> list[Exception | None]:
        """Write (group, name, items) to VMs' metadata, up to METADATA_WRITERS at once; the error of each."""

        def write(item: tuple[str, str, Mapping[str, str]]) -> Exception | None:
            group, name, items = item
            try:
                self.calls("compute", "set_metadata", self.backend.set_metadata, group, name, items)
            except Exception as exc:
                return exc
            return None

        # A backend whose calls take no real time (`garo simulate`'s cloud) says so: threads would only cost.
        width = max(1, int(getattr(self.backend, "metadata_writers", METADATA_WRITERS)))
        if len(writes) <= 1 or width == 1:
            return [write(item) for item in writes]
        with ThreadPoolExecutor(min(width, len(writes)), thread_name_prefix="garo-metadata") as pool:
            return list(pool.map(write, writes))
