"""The observe step: read the cloud and GitHub, and ask GitHub read-only questions. Never writes.

A :class:`~scaler.agent.views.Snapshot` is read once per batch or pass (one
``list`` per group, one ``list_runners`` for the department), so a burst costs
a handful of API calls rather than one per job. Questions the planner raises
(is this job still queued?) are GETs; their answers go back to the planner,
which turns them into actions. Only the runner listing is cached here, for a
few seconds: it pages through the whole organisation. Every other read is
made afresh; a listing equal to the previous one just reuses what was picked
out of it (our runners, VMs by name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from scaler import naming
from scaler.agent.actions import Answer, Plan, Question
from scaler.agent.calls import Calls, api_error_kind, github_status
from scaler.agent.views import Snapshot
from scaler.backends.base import Backend, Instance
from scaler.config import StackConfig
from scaler.github.models import GitHubApi, Runner
from scaler.github.ratelimit import JitBudget

log = logging.getLogger("garo.agent")
RUNNERS_MAX_AGE = 5.0  # seconds a runner listing serves event handling
OURS_REMEMBERED = 20_000  # runner names whose ownership is remembered (an org's runners, with room)
# Seconds an unanswered ask for a JIT config counts as the VM still wanting one. Short: the ask
# must not outlive a config the VM took from another replica meanwhile (then a runner that came
# and went, and a second config would keep the used VM waiting); a VM that waits asks again.
ASKED_WITHIN = 3.0
QUESTION_ROUNDS = 3  # plan, ask, plan again: answers can raise new questions (a job over -> its VM goes)


class Observer:
    def __init__(
        self,
        config: StackConfig,
        backend: Backend,
        github: GitHubApi,
        calls: Calls,
        clock: Callable[[], float],
        jit_budget: JitBudget | None = None,
        on_runners: Callable[[Iterable[Runner]], None] | None = None,
    ) -> None:
        """``on_runners`` sees every fresh listing of our runners (the runner-version metric)."""
        self.on_runners = on_runners
        self.department = config.department
        self.group_names = tuple(g.name for g in config.groups)
        self.backend = backend
        self.github = github
        self.calls = calls
        self.clock = clock
        self.budget = jit_budget
        self._runners: dict[str, Runner] | None = None
        self._runners_at = float("-inf")
        self._ours: dict[str, bool] = {}  # runner name -> ours? (naming.is_ours is pure; listings repeat names)
        # The last listing GitHub gave and our runners in it: an equal listing (no runner came, went or
        # changed) gives the same runners, so they are not picked out again, nor the metric set again.
        self._listed: list[Runner] | None = None
        self._listed_ours: dict[str, Runner] = {}
        # Each group's last VM listing and its VMs by name: an equal listing gives the same dict.
        self._groups_listed: dict[str, tuple[list[Instance], dict[str, Instance]]] = {}

    def snapshot(self, groups: Iterable[str] | None = None, runners_max_age: float | None = 0.0) -> Snapshot:
        """Runners (at most ``runners_max_age`` old; None: not read) and the instances of the given groups."""
        runners = self.runners(runners_max_age) if runners_max_age is not None else None
        runners_at = self._runners_at if runners is not None else float("-inf")
        instances: dict[str, dict[str, Instance]] = {}
        for group in groups if groups is not None else self.group_names:
            try:
                listed = list(self.calls("compute", "list", self.backend.list, group))
                last = self._groups_listed.get(group)
                if last is not None and last[0] == listed:
                    instances[group] = last[1]  # nobody changes a snapshot's dicts: planning copies them
                else:
                    instances[group] = {i.name: i for i in listed}
                    self._groups_listed[group] = (listed, instances[group])
            except Exception as exc:  # one broken group (a misnamed MIG, ...) must not stop the others
                log.warning(
                    "cannot list the group's VMs; skipping it this time",
                    extra={"group": group, "error": api_error_kind(exc)},
                )
        return Snapshot(runners, instances, runners_at, self.asking())

    def asking(self) -> frozenset[str] | None:
        """VMs that asked the backend's JIT vault (this process's) for a config lately and got none."""
        vault = getattr(self.backend, "jit_vault", None)
        return vault.asking(ASKED_WITHIN) if vault is not None else None

    def runners(self, max_age: float = RUNNERS_MAX_AGE) -> dict[str, Runner] | None:
        """Our runners by name as GitHub lists them, at most ``max_age`` seconds old; None if unknown."""
        now = self.clock()
        if self._runners is not None and now - self._runners_at <= max_age:
            return self._runners
        try:
            listed = self.calls("github", "list_runners", self.github.list_runners)
        except Exception as exc:
            log.warning("cannot list runners; acting on what the book knows", extra={"error": api_error_kind(exc)})
            self._runners = None
            return None
        self._runners_at = now
        listed = list(listed)
        if listed == self._listed:
            self._runners = self._listed_ours  # nobody changes a listing's dict: planning copies it
            return self._runners
        ours = self._ours
        if len(ours) > OURS_REMEMBERED:
            ours.clear()
        for name in [r.name for r in listed if r.name not in ours]:
            ours[name] = naming.is_ours(self.department, name, self.group_names)
        runners = {r.name: r for r in listed if ours[r.name]}
        self._runners = self._listed_ours = runners
        self._listed = listed
        if self.on_runners is not None:
            self.on_runners(self._runners.values())
        return self._runners

    def ask(
        self, questions: Iterable[Question], *, stop_at_failure: bool = False, not_found: set[int] | None = None
    ) -> dict[int, Answer]:
        """GitHub's answers (GET only); a question GitHub could not answer has none.

        ``not_found`` collects the jobs GitHub answered 404 for (no such job in that repository).
        """
        answers: dict[int, Answer] = {}
        for q in questions:
            try:
                job = self.calls("github", "get_job", self.github.get_job, q.repo, q.job_id)
            except Exception as exc:
                log.warning("cannot check job", extra={"job_id": q.job_id, "error": api_error_kind(exc)})
                if not_found is not None and github_status(exc) == 404:
                    not_found.add(q.job_id)
                    continue
                if stop_at_failure:
                    break
                continue
            answers[q.job_id] = Answer(q, job)
        return answers

    def jit_budget(self) -> int | None:
        """JIT configs GitHub would generate right now; None when unknown (no budget given)."""
        return self.budget.remaining() if self.budget is not None else None

    def answered(self, make_plan: Callable[[Mapping[int, Answer]], Plan], *, stop_at_failure: bool = False) -> Plan:
        """Plan, ask GitHub what the plan wants to know, plan again with the answers (a few rounds)."""
        answers: dict[int, Answer] = {}
        asked: set[int] = set()
        plan = make_plan(answers)
        for _ in range(QUESTION_ROUNDS):
            new = [q for job_id, q in plan.questions.items() if job_id not in asked]
            if not new:
                break
            asked.update(q.job_id for q in new)
            got = self.ask(new, stop_at_failure=stop_at_failure)
            if not got:
                break
            answers |= got
            plan = make_plan(answers)
        return plan
