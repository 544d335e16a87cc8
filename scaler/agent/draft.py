"""The planner's scratch pad: a copy of the book and snapshot that follow the plan as it grows.

Planning a pass means deciding one thing after another (delete these, then
create for what is left), so later decisions must see the earlier ones. The
draft applies each action to its own copies; the caller's book and snapshot
are never touched, which is what makes a dry run change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from scaler import naming
from scaler.agent.actions import Action, Answer, Create, Delete, Deregister, Plan, Question, Record, remember
from scaler.agent.state import WAITING_STATUSES, Book
from scaler.agent.views import Snapshot
from scaler.backends.base import REPO_KEY, Instance, InstanceState
from scaler.config import StackConfig
from scaler.github.models import Runner


class Draft:
    def __init__(
        self, config: StackConfig, book: Book, snap: Snapshot, now: float, answers: Mapping[int, Answer]
    ) -> None:
        self.config = config
        self.department = config.department
        self.group_names = tuple(g.name for g in config.groups)
        self.now = now
        self.answers = answers
        self.original = book
        self.book = book.copy()
        runners: dict[str, Runner] | None = dict(snap.runners) if snap.runners is not None else None
        self.instances: dict[str, dict[str, Instance]] = {g: dict(i) for g, i in snap.instances.items()}
        self.snap = Snapshot(runners, self.instances, snap.runners_at, snap.asking)
        self.plan = Plan(registered=frozenset(runners or ()))
        self.book.saw_runners(self.plan.registered, now)
        # What GitHub answered is recorded first: every later decision reads it from the book.
        for job_id in sorted(answers):
            answer = answers[job_id]
            q = answer.question
            self.add(
                Record(
                    group=q.group,
                    name=str(job_id),
                    reason=f"GitHub says the job is {answer.job.status}",
                    job_id=job_id,
                    repo=q.repo,
                    status=answer.job.status,
                    runner_name=answer.job.runner_name,
                    checked_vm=q.vm,
                )
            )

    def add(self, action: Action) -> None:
        self.plan.actions.append(action)
        remember(self.book, action, self.now)
        if isinstance(action, Delete):
            self.instances.get(action.group, {}).pop(action.name, None)
            if action.runner_id is not None and self.snap.runners is not None:
                self.snap.runners.pop(action.name, None)  # type: ignore[attr-defined]  # deregistered first
        elif isinstance(action, Deregister) and self.snap.runners is not None:
            self.snap.runners.pop(action.name, None)  # type: ignore[attr-defined]
        elif isinstance(action, Create):
            inst = Instance(action.name, action.group, InstanceState.CREATING, self.now, metadata=action.metadata())
            self.instances.setdefault(action.group, {})[action.name] = inst

    def ask(self, question: Question) -> Answer | None:
        """GitHub's answer if the observe step has it; otherwise note the question (the caller assumes a default)."""
        answer = self.answers.get(question.job_id)
        if answer is None:
            self.plan.questions.setdefault(question.job_id, question)
        return answer

    def made_for_waits(self, group: str, inst: Instance, vm: str = "") -> bool:
        """Does the job this VM was made for still wait for a runner (so the VM went to another job)?

        Asked only about a job this agent acknowledged on capacity (``covered``)
        or, after a restart, one it knows only from the VM's own metadata: such
        a job would wait forever if another job took its VM and we lost that
        event. No answer (yet) counts as no.
        """
        made_for = naming.job_of(self.department, group, inst.name)
        if made_for is None:
            return False
        record = self.original.jobs.get(made_for)
        repo = record.repo if record is not None else inst.metadata.get(REPO_KEY, "")
        if not repo or (record is not None and record.status != "covered"):
            return False
        answer = self.ask(Question(made_for, group, repo, vm))
        return answer is not None and answer.job.status in WAITING_STATUSES
