"""The planner as a table: hand-built books and snapshots in, the actions it plans out.

No threads, no fakes, no clock: the planner is a function, so each row states
what the agent knows and what it must decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from scaler import naming
from scaler.agent import planner
from scaler.agent.actions import Answer, Kind, Plan, Question, remember
from scaler.agent.state import Book
from scaler.agent.views import Snapshot, view
from scaler.backends.base import JOB_KEY, REPO_KEY, STATE_LABEL, Instance, InstanceState
from scaler.github.models import Job, Runner
from tests.agent.world import make_config

NOW = 1_700_000_000.0
REPO = "octo-org/app"
CONFIG = make_config()
WARM_CONFIG = make_config(warm=1)


def vm(
    job: int | None = None, gen: int = 0, *, age: float = 60.0, state: str = "running", reports: str = ""
) -> Instance:
    """A VM of group linux, made for ``job`` (a warm VM when None), ``age`` seconds old."""
    name = naming.instance_name("eng", "linux", job, gen) if job else naming.warm_name("eng", "linux", 0)
    metadata = {JOB_KEY: str(job), REPO_KEY: REPO} if job else {JOB_KEY: ""}
    labels = {STATE_LABEL: reports} if reports else {}
    return Instance(name, "linux", InstanceState(state), NOW - age, labels, metadata=metadata)


def runner(inst: Instance, *, busy: bool = False, online: bool = True, rid: int = 7) -> Runner:
    return Runner(rid, inst.name, "online" if online else "offline", busy)


def queued(book: Book, *jobs: int) -> Book:
    for job in jobs:
        book.observe_job(job, "linux", REPO, "queued", NOW - 30)
    return book


@dataclass
class Case:
    book: Book = field(default_factory=Book)
    vms: list[Instance] = field(default_factory=list)
    runners: list[Runner] | None = field(default_factory=list)
    answers: dict[int, Answer] = field(default_factory=dict)
    config: object = CONFIG
    budget: int | None = None

    def snapshot(self) -> Snapshot:
        runners = {r.name: r for r in self.runners} if self.runners is not None else None
        return Snapshot(runners, {"linux": {i.name: i for i in self.vms}, "gpu": {}})

    def plan(self) -> Plan:
        return planner.plan_reconcile(
            self.config,  # type: ignore[arg-type]
            self.book,
            self.snapshot(),
            NOW,
            self.answers,
            jit_budget=self.budget,
        )


def name(job: int | None, gen: int = 0) -> str:
    return naming.instance_name("eng", "linux", job, gen) if job else naming.warm_name("eng", "linux", 0)


def confirmed(book: Book, *keys: str) -> Book:
    """The book after a pass that saw these deletion candidates for the first time."""
    book.end_pass(set(keys))
    return book


def answered(job: int, status: str) -> dict[int, Answer]:
    return {job: Answer(Question(job, "linux", REPO), Job(job, status))}


BUSY_OTHER = vm(11)  # made for job 11, but running another job
WAITING_R1 = vm(11, 1, age=5, state="creating")
REPORTED = vm(12, reports="done")
STALE = vm(13, age=300)  # never registered within time-to-start (120 s)
ONLINE = vm(14)
ORPHAN = Runner(9, name(15), "online", False)

CASES: dict[str, tuple[Callable[[], Case], list[tuple[Kind, str]]]] = {
    "a queued job gets a VM named after it": (
        lambda: Case(queued(Book(), 11)),
        [(Kind.CREATE, name(11))],
    ),
    "a queued job whose VM is on its way gets none": (
        lambda: Case(queued(Book(), 11), [vm(11, age=5, state="creating")]),
        [],
    ),
    "a job whose VM another job took gets the next generation (GitHub: it still waits)": (
        lambda: Case(queued(Book(), 11), [BUSY_OTHER], [runner(BUSY_OTHER, busy=True)], answers=answered(11, "queued")),
        [(Kind.RECORD, "11"), (Kind.CLEAR_JIT, name(11)), (Kind.CREATE, name(11, 1))],
    ),
    "a job whose VM another job took gets no replacement once GitHub says it started elsewhere": (
        lambda: Case(
            queued(Book(), 11), [BUSY_OTHER], [runner(BUSY_OTHER, busy=True)], answers=answered(11, "in_progress")
        ),
        [(Kind.RECORD, "11"), (Kind.CLEAR_JIT, name(11))],
    ),
    "a job with a listed replacement gets no second one, whatever this replica remembers of the name": (
        lambda: Case(
            Book(jobs=queued(Book(), 11).jobs, registered={name(11, 1): NOW - 100}),
            [BUSY_OTHER, WAITING_R1],
            [runner(BUSY_OTHER, busy=True)],
        ),
        [(Kind.CLEAR_JIT, name(11))],
    ),
    "the warm pool is topped up with the lowest free slot": (
        lambda: Case(config=WARM_CONFIG),
        [(Kind.CREATE, name(None))],
    ),
    "a VM that never registered is marked first": (
        lambda: Case(vms=[STALE]),
        [(Kind.MARK, name(13))],
    ),
    "a VM that never registered is deleted on the next pass (GitHub: its job is over)": (
        lambda: Case(confirmed(Book(), f"vm:linux:{name(13)}"), [STALE], answers=answered(13, "completed")),
        [(Kind.RECORD, "13"), (Kind.DELETE, name(13))],
    ),
    "a VM that never registered is replaced while its job still waits": (
        lambda: Case(confirmed(Book(), f"vm:linux:{name(13)}"), [STALE], answers=answered(13, "queued")),
        [(Kind.RECORD, "13"), (Kind.DELETE, name(13)), (Kind.CREATE, name(13))],
    ),
    "a VM that reports its job over is deleted at once": (
        lambda: Case(vms=[REPORTED]),
        [(Kind.DELETE, name(12))],
    ),
    "a spent JIT config is cleared once the runner is online": (
        lambda: Case(vms=[ONLINE], runners=[runner(ONLINE)], config=WARM_CONFIG),
        [(Kind.CLEAR_JIT, name(14))],
    ),
    "a runner without a VM is marked, then deregistered": (
        lambda: Case(confirmed(Book(), f"runner:{name(15)}"), runners=[ORPHAN]),
        [(Kind.DEREGISTER, name(15))],
    ),
    "a VM that exists gets its JIT config": (
        lambda: Case(Book(pending_jit={name(16): "linux"}), [vm(16, age=5)]),
        [(Kind.DELIVER_JIT, name(16))],
    ),
    "a VM still being created does not (GitHub's budget is not spent on it)": (
        lambda: Case(Book(pending_jit={name(16): "linux"}), [vm(16, age=5, state="creating")]),
        [],
    ),
    "no JIT config when GitHub's budget is spent": (
        lambda: Case(Book(pending_jit={name(16): "linux"}), [vm(16, age=5)], budget=0),
        [],
    ),
    "without GitHub's runner list nothing is deleted": (
        lambda: Case(vms=[STALE, vm(17, age=7200)], runners=None),
        [],
    ),
}


def test_a_replacement_waits_for_githubs_word_that_its_job_still_waits() -> None:
    """The replica that got the job's in_progress may be another: a replacement would bill for nothing.

    Until GitHub answers, the job's slot is neither a replacement nor a warm VM.
    """
    plan = Case(queued(Book(), 11), [BUSY_OTHER], [runner(BUSY_OTHER, busy=True)]).plan()
    assert plan.of(Kind.CREATE) == []
    assert list(plan.questions) == [11]


@pytest.mark.parametrize("case", list(CASES))
def test_plan(case: str) -> None:
    make, expected = CASES[case]
    given = make()
    before = given.book.copy()
    plan = given.plan()
    assert [(a.kind, a.name) for a in plan.actions] == expected, str(plan)
    assert given.book == before, "the planner never changes the book"


def test_a_vm_of_a_job_that_may_be_over_raises_a_question_and_its_answer_decides() -> None:
    book = confirmed(Book(), f"vm:linux:{name(13)}")
    plan = Case(book, [STALE]).plan()
    assert list(plan.questions.values()) == [Question(13, "linux", REPO)]
    # No answer (GitHub down): replacing is the safe side.
    assert [a.reason for a in plan.of(Kind.DELETE)] == ["never registered within time-to-start; its job still waits"]


def test_a_runner_seen_after_its_vm_was_created_and_gone_since_means_the_job_is_over() -> None:
    inst = vm(18, age=200)
    book = Book(registered={inst.name: NOW - 100})
    plan = Case(confirmed(book, f"vm:linux:{inst.name}"), [inst]).plan()
    assert [(a.kind, a.reason) for a in plan.actions] == [(Kind.DELETE, "runner came and went")]


def test_held_jobs_are_acked_once_their_own_vm_has_its_config() -> None:
    own = vm(19)
    book = queued(Book(), 19)
    snap = Case(book, [own]).snapshot()
    held = {"ack-1": (19, "linux")}
    assert planner.settled(CONFIG, Book(jobs=book.jobs, pending_jit={own.name: "linux"}), snap, {"linux"}, held) == []
    assert planner.settled(CONFIG, Book(jobs=book.jobs, delivered={own.name: NOW}), snap, {"linux"}, held) == ["ack-1"]


def test_settle_gives_a_held_jobs_unconfigured_vm_a_config() -> None:
    own = vm(20, age=5.0)
    book = queued(Book(), 20)
    plan = planner.plan_settle(CONFIG, book, Case(book, [own]).snapshot(), NOW, {"linux"}, {20})
    assert [(a.kind, a.name) for a in plan.actions] == [(Kind.QUEUE_JIT, own.name), (Kind.DELIVER_JIT, own.name)]


def test_a_vm_older_than_an_interval_without_a_runner_gets_no_second_config() -> None:
    """Its runner may have come and gone between this replica's listings: a second config would strand it."""
    old = vm(None, age=CONFIG.reconcile_interval + 1.0)
    book = Book()
    plan = planner.plan_reconcile(CONFIG, book, Case(book, [old]).snapshot(), NOW)
    assert not plan.of(Kind.QUEUE_JIT) and not plan.of(Kind.DELIVER_JIT)
    young = vm(None, age=1.0)
    plan = planner.plan_reconcile(CONFIG, book, Case(book, [young]).snapshot(), NOW)
    assert [a.name for a in plan.of(Kind.QUEUE_JIT)] == [young.name]


def pulling(case: Case, *asking: str) -> Snapshot:
    """The case's snapshot from an agent whose VMs pull their configs; ``asking``: they asked it in vain."""
    snap = case.snapshot()
    return Snapshot(snap.runners, snap.instances, snap.runners_at, frozenset(asking))


def test_a_replica_that_did_not_make_a_pulling_vm_configures_it_only_while_it_asks_in_vain() -> None:
    """A used VM whose runner came and went looks unconfigured; only its ask says it still needs a config.

    A second config would register a runner the used VM never starts, and it would wait with that
    offline runner until time-to-start: the chaos run's ~30 s leaks (docs/reliability.md, 1 (a)).
    """
    grace = CONFIG.reconcile_interval / 2
    used = vm(None, age=grace + 1.0)  # young, no runner listed, not made by this replica
    book = Book()
    plan = planner.plan_reconcile(CONFIG, book, pulling(Case(book, [used])), NOW)
    assert not plan.of(Kind.QUEUE_JIT) and not plan.of(Kind.DELIVER_JIT)
    plan = planner.plan_reconcile(CONFIG, book, pulling(Case(book, [used]), used.name), NOW)
    assert [a.name for a in plan.of(Kind.QUEUE_JIT)] == [used.name]  # it asks: its maker died
    fresh = vm(None, age=grace - 1.0)  # its maker configures it within seconds: no race for it
    plan = planner.plan_reconcile(CONFIG, book, pulling(Case(book, [fresh]), fresh.name), NOW)
    assert not plan.of(Kind.QUEUE_JIT)


def test_settle_answers_a_vm_asking_in_vain_but_not_a_held_jobs_vm_that_does_not_ask() -> None:
    asking, quiet = vm(20, age=CONFIG.reconcile_interval), vm(21, age=CONFIG.reconcile_interval)
    book = queued(Book(), 21)
    plan = planner.plan_settle(CONFIG, book, pulling(Case(book, [asking, quiet]), asking.name), NOW, {"linux"}, {21})
    jit = [(a.kind, a.name) for a in plan.actions if a.kind in (Kind.QUEUE_JIT, Kind.DELIVER_JIT)]
    assert jit == [(Kind.QUEUE_JIT, asking.name), (Kind.DELIVER_JIT, asking.name)]
    # This replica made it (its config is pending or was given): nothing more, ask or not.
    book.delivered[asking.name] = NOW - 10.0
    plan = planner.plan_settle(CONFIG, book, pulling(Case(book, [asking]), asking.name), NOW, {"linux"}, set())
    assert not plan.of(Kind.QUEUE_JIT) and not plan.of(Kind.DELIVER_JIT)


def test_a_vm_another_replica_configured_counts_as_having_had_a_runner() -> None:
    """A 409 told this replica a config exists; a later listing without the runner means it came and went."""
    used = vm(20, age=60.0)
    book = Book()
    book.delivered[used.name] = NOW - 40.0  # GitHub's 409: another replica generated its config
    snap = Case(book, [used]).snapshot()
    listed_after = Snapshot(snap.runners, snap.instances, runners_at=NOW)
    assert used.name in view("eng", book, "linux", listed_after).finished
    # A listing taken too soon after the config may not show its runner yet: that proves nothing.
    listed_soon = Snapshot(snap.runners, snap.instances, runners_at=NOW - 15.0)
    assert used.name not in view("eng", book, "linux", listed_soon).finished


def test_a_job_known_only_from_its_vms_name_learns_its_repository_from_that_vm() -> None:
    """After a restart the agent learns of a job whose VM another job took from the VM's name alone.

    Without a repository GitHub cannot be asked about it, and it used to be given up; the VM's own
    ``garo-repo`` (written when it was made for that job) says where to ask.
    """
    taken = vm(21)  # made for job 21 (garo-repo octo-org/app), now running another job
    book = Book()
    book.observe_job(21, "linux", "", "queued", NOW - 30)
    plan = Case(book, [taken], [runner(taken, busy=True)]).plan()
    learnt = [a for a in plan.of(Kind.RECORD) if a.name == "21"]
    assert [(a.repo, a.status) for a in learnt] == [(REPO, "")]  # type: ignore[attr-defined]
    later = book.copy()
    for action in learnt:
        remember(later, action, NOW)
    assert later.jobs[21].repo == REPO and later.jobs[21].status == "queued"
    assert later.jobs[21].seen_at == NOW - 30, "learning the repository does not postpone asking GitHub"
    verify = planner.plan_verify(CONFIG, later, NOW + 600, held_jobs=(), verify_after=60)
    assert list(verify.questions) == [21] and not verify.of(Kind.RECORD)


def test_a_job_whose_named_vm_ran_another_job_waits_again_when_its_spare_vm_goes() -> None:
    """Acked on a spare VM, a job counts as covered; its own name on a spent VM is no VM of its own."""
    spent = vm(22)  # named after job 22, but another job took it
    spare = vm(23, age=300)  # made for job 23 (which ran elsewhere), never registered
    book = Book(spent={spent.name: NOW - 50})
    book.observe_job(22, "linux", REPO, "covered", NOW - 40)
    book.observe_job(23, "linux", REPO, "in_progress", NOW - 40, runner_name=name(24))
    confirmed(book, f"vm:linux:{spare.name}")
    plan = Case(book, [spent, spare], [runner(spent, busy=True)]).plan()
    assert [a.name for a in plan.of(Kind.DELETE)] == [spare.name]
    assert [a.name for a in plan.of(Kind.REQUEUE)] == ["22"]
    assert 22 in plan.questions  # a replacement VM only once GitHub says the job still waits
    answers = answered(22, "queued")
    plan = Case(book, [spent, spare], [runner(spent, busy=True)], answers=answers).plan()
    assert [a.name for a in plan.of(Kind.CREATE)] == [name(22, 1)]


def test_a_second_job_does_not_count_on_the_spare_vm_a_first_job_was_acked_on() -> None:
    """Two jobs queued together with a standby pool: one resumed VM covers one of them, not both.

    The first job was acknowledged on the resumed VM (not named after any job). Counting that VM as
    spare again left the second job without capacity until the agent asked GitHub about it.
    """
    config = make_config(standby=2)
    resumed = Instance(naming.warm_name("eng", "linux", 0), "linux", InstanceState.RESUMING, NOW - 5)
    standby = Instance(naming.warm_name("eng", "linux", 1), "linux", InstanceState.STANDBY, NOW - 600)
    book = queued(Book(), 31, 32)
    book.cover(31)
    plan = Case(book, [resumed, standby], config=config).plan()
    assert [(a.kind, a.count) for a in plan.of(Kind.RESUME)] == [(Kind.RESUME, 1)]  # type: ignore[attr-defined]
    snap = Case(book, [resumed, standby]).snapshot()
    held = {"ack-31": (31, "linux"), "ack-32": (32, "linux")}
    assert planner.settled(config, book, snap, {"linux"}, held) == ["ack-31"], "32 is not acked on 31's VM"


def test_a_runner_listed_before_its_vm_counts_as_that_jobs_vm_on_its_way() -> None:
    """Listings are cached: another replica's replacement may show as a runner before it shows as a VM.

    Creating yet another replacement then gave the job two VMs at once (found by the chaos run).
    """
    taken = vm(41)  # made for job 41, taken by another job
    replacement = Runner(8, name(41, 1), "offline", False)  # its JIT config exists; its VM is not listed here yet
    book = queued(Book(), 41)
    book.spent[taken.name] = NOW - 10
    plan = Case(book, [taken], [runner(taken, busy=True), replacement], answers=answered(41, "queued")).plan()
    assert not plan.of(Kind.CREATE), str(plan)
    without = Case(book, [taken], [runner(taken, busy=True)], answers=answered(41, "queued")).plan()
    assert [a.name for a in without.of(Kind.CREATE)] == [name(41, 1)]
