"""What the planner decides and the executor does: one small, typed value per change.

Every action names its group and VM (or job) and says why, so a dry run can
print exactly what a real pass would do. Actions that only change the agent's
own book (``record``, ``requeue``, ``spend``, ``queue-jit``) are actions too:
they are what GitHub's read-only answers and the cloud's listing taught us,
and a dry run must not keep them either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from scaler.agent.state import Book, Sighting
from scaler.backends.base import JOB_KEY, REPO_KEY
from scaler.github.models import Job


class Kind(StrEnum):
    RECORD = "record"  # remember what GitHub answered about a job
    SPEND = "spend"  # a VM ran another job than its own: never give its name to a new VM
    REQUEUE = "requeue"  # a job lost the capacity that covered it: it waits again
    MARK = "mark"  # a deletion candidate seen for the first time: acted on by the next pass
    CLEAR_JIT = "clear-jit"  # take a spent JIT config out of a VM's metadata
    DEREGISTER = "deregister"  # remove a runner without a VM from GitHub
    DELETE = "delete"  # deregister the VM's runner (if any), then delete the VM
    RESUME = "resume"  # resume standby VMs
    CREATE = "create"  # create a named VM
    QUEUE_JIT = "queue-jit"  # a VM exists without a runner config: it needs one
    DELIVER_JIT = "deliver-jit"  # generate a JIT config for a VM and write it to its metadata


@dataclass(frozen=True)
class Action:
    """Base of every action: ``kind``, the group, the VM or runner name (or job), and why."""

    group: str
    name: str
    reason: str

    kind: Kind = field(init=False, default=Kind.RECORD)

    def __str__(self) -> str:
        return f"{self.kind:<11} {self.group or '-':<12} {self.name:<40} {self.reason}"


@dataclass(frozen=True)
class Record(Action):
    job_id: int = 0
    repo: str = ""
    status: str = ""  # empty: only the job's repository is learnt (status and times stay)
    runner_name: str | None = None
    checked_vm: str = ""  # the busy VM this answer was asked for (asked once per VM)

    kind: Kind = field(init=False, default=Kind.RECORD)


@dataclass(frozen=True)
class Spend(Action):
    kind: Kind = field(init=False, default=Kind.SPEND)


@dataclass(frozen=True)
class Requeue(Action):
    job_id: int = 0
    repo: str = ""

    kind: Kind = field(init=False, default=Kind.REQUEUE)


@dataclass(frozen=True)
class Mark(Action):
    key: str = ""
    job_over: bool = False  # a VM whose one job is over: its confirmation pass comes at once (loop.step)

    kind: Kind = field(init=False, default=Kind.MARK)

    def __str__(self) -> str:
        return f"{super().__str__()} (first sighting; acts on the next pass)"


@dataclass(frozen=True)
class ClearJit(Action):
    job_label: int | None = None  # also label the VM with the job it really runs (a stolen VM)

    kind: Kind = field(init=False, default=Kind.CLEAR_JIT)


@dataclass(frozen=True)
class Deregister(Action):
    runner_id: int = 0

    kind: Kind = field(init=False, default=Kind.DEREGISTER)


@dataclass(frozen=True)
class Delete(Action):
    runner_id: int | None = None  # deregistered first, so GitHub cannot hand it a job meanwhile

    kind: Kind = field(init=False, default=Kind.DELETE)


@dataclass(frozen=True)
class Resume(Action):
    count: int = 0

    kind: Kind = field(init=False, default=Kind.RESUME)


@dataclass(frozen=True)
class Create(Action):
    job_id: int | None = None  # the job the VM is made for; None for a warm VM
    repo: str = ""

    kind: Kind = field(init=False, default=Kind.CREATE)

    def metadata(self) -> dict[str, str]:
        """The per-instance facts the VM carries (read back by replicas and restarted agents)."""
        if self.job_id is None:
            return {JOB_KEY: ""}
        return {JOB_KEY: str(self.job_id), REPO_KEY: self.repo}


@dataclass(frozen=True)
class QueueJit(Action):
    kind: Kind = field(init=False, default=Kind.QUEUE_JIT)


@dataclass(frozen=True)
class DeliverJit(Action):
    kind: Kind = field(init=False, default=Kind.DELIVER_JIT)


@dataclass(frozen=True)
class Question:
    """A read-only question for GitHub: does this job still wait? (``vm``: the busy VM it was asked for)."""

    job_id: int
    group: str
    repo: str
    vm: str = ""


@dataclass(frozen=True)
class Answer:
    question: Question
    job: Job


@dataclass
class Plan:
    """A planner's output: the actions in order, plus what the pass observed.

    ``questions`` are GitHub questions whose answers would refine the plan
    (the observe step asks them and plans again); ``seen`` are the deletion
    candidates the pass saw (marks are kept only for those); ``registered`` are
    runners the listing showed.
    """

    actions: list[Action] = field(default_factory=list)
    desired: dict[str, int] = field(default_factory=dict)
    demand: dict[str, int] = field(default_factory=dict)
    vm_states: dict[str, dict[str, int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # group -> VMs an operator keeps (garo-keep)
    # group -> (age of the oldest active VM, age of the oldest waiting job), seconds: for alerts.
    ages: dict[str, tuple[float, float]] = field(default_factory=dict)
    questions: dict[int, Question] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    sightings: dict[str, Sighting] = field(default_factory=dict)  # this pass's view of the VMs in ``seen``
    registered: frozenset[str] = frozenset()
    reconcile: bool = False  # a reconcile pass: the executor ends the pass (marks, pruning)

    @property
    def first_sightings(self) -> bool:
        return any(a.kind is Kind.MARK for a in self.actions)

    @property
    def finished_sightings(self) -> bool:
        """First sightings of VMs whose job is over: they bill for nothing, so confirm them at once."""
        return any(isinstance(a, Mark) and a.job_over for a in self.actions)

    def of(self, kind: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    def __str__(self) -> str:
        lines = [f"group {g}: desired {d} active VMs" for g, d in sorted(self.desired.items())]
        lines += [str(a) for a in self.actions] or ["nothing to do"]
        return "\n".join(lines)


def remember(book: Book, action: Action, now: float) -> None:
    """Change the book as a done action does (the planner's scratch book and, once done, the real one).

    ``resume`` changes nothing here: which VMs resumed is known only once the cloud answers.
    """
    if isinstance(action, Record) and not action.status:
        book.learn_repo(action.job_id, action.repo)
    elif isinstance(action, Record):
        book.learn(action.job_id, action.group, action.repo, action.status, now, action.runner_name)
        if action.checked_vm:
            book.stolen_checked.add(action.checked_vm)
    elif isinstance(action, Spend):
        book.spent[action.name] = now
    elif isinstance(action, Requeue):
        if action.job_id in book.jobs:
            book.requeue(action.job_id, now)
        else:
            book.observe_job(action.job_id, action.group, action.repo, "queued", now)
    elif isinstance(action, ClearJit):
        book.jit_cleared.add(action.name)
    elif isinstance(action, Deregister):
        book.registered.pop(action.name, None)
    elif isinstance(action, Delete):
        book.forget_instance(action.name)
    elif isinstance(action, Create | QueueJit):
        book.pending_jit[action.name] = action.group
    elif isinstance(action, DeliverJit):
        book.pending_jit.pop(action.name, None)
        book.delivered[action.name] = now
