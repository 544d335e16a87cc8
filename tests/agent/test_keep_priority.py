"""Kept VMs and priority classes, as planner tables (pure) and under contention.

A kept VM (``garo-keep``) is deleted by nothing (reconcile, time-to-live, its
job's completion) until the keep expires, counts against max, and is nobody's
capacity. At max, the next free VM goes to the highest priority class; aging
lifts a waiting job one class per ``priorityAging``, so none waits forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from scaler.agent import planner
from scaler.agent.actions import Kind
from scaler.agent.policy import by_priority, effective_rank, keep_until, priority_class
from scaler.agent.state import Book
from scaler.backends.base import KEEP_KEY, Instance
from scaler.config import ConfigError, StackConfig
from scaler.github.models import Runner
from tests.agent.test_planner import NOW, REPO, Case, answered, confirmed, name, queued, runner, vm
from tests.agent.world import make_config

PRIORITIES = [
    {"class": "deploy", "repositories": ["octo-org/*"], "workflows": ["Deploy*"]},
    {"class": "background", "workflows": ["Nightly"]},
]


def stack(extra: dict[str, Any], **sizes: int) -> StackConfig:
    """The test world's stack with extra ``garo:`` keys (priorities, keepFor)."""
    return make_config(**sizes, **extra)


def kept(inst: Instance, until: float | str = NOW + 3600) -> Instance:
    """The VM with an operator's keep (a unix time, or "true")."""
    return replace(inst, metadata={**inst.metadata, KEEP_KEY: str(until)})


def deletes(case: Case) -> list[str]:
    """VMs the pass deletes or marks for deletion (the next pass's deletes)."""
    return [a.name for a in case.plan().actions if a.kind is Kind.DELETE or getattr(a, "key", "").startswith("vm:")]


# ---------------------------------------------------------------------- keep


@pytest.mark.parametrize(
    "why,inst,runners",
    [
        ("past time-to-live", lambda: vm(1, age=4000), lambda i: [runner(i)]),
        ("never registered", lambda: vm(1, age=600), lambda i: []),
        ("job over (VM reports it)", lambda: vm(1, reports="done"), lambda i: []),
        ("runner offline", lambda: vm(1, age=600), lambda i: [runner(i, online=False)]),
        ("failed", lambda: vm(1, state="failed"), lambda i: []),
        ("idle beyond the warm pool", lambda: vm(None), lambda i: [runner(i)]),
    ],
)
def test_reconcile_deletes_no_kept_vm(
    why: str, inst: Callable[[], Instance], runners: Callable[[Instance], list[Runner]]
) -> None:
    plain = inst()
    book = confirmed(Book(), f"vm:linux:{plain.name}")
    assert deletes(Case(book=book, vms=[plain], runners=runners(plain))) == [plain.name], why
    book = confirmed(Book(), f"vm:linux:{plain.name}")
    assert deletes(Case(book=book, vms=[kept(plain)], runners=runners(plain))) == [], why


def test_an_expired_keep_protects_nothing() -> None:
    old = kept(vm(1, age=4000), until=NOW - 1)
    book = confirmed(Book(), f"vm:linux:{old.name}")
    assert deletes(Case(book=book, vms=[old], runners=[runner(old)])) == [old.name]


def test_a_hand_set_true_expires_keep_for_after_time_to_live() -> None:
    group = make_config().group("linux")
    inst = kept(vm(1, age=10), until="true")
    assert keep_until(group, inst) == inst.created_at + group.time_to_live + group.keep_for
    assert keep_until(group, kept(vm(1), until=NOW + 10**9)) == vm(1).created_at + group.time_to_live + group.keep_for
    assert keep_until(group, kept(vm(1), until="yes please")) == 0.0


def test_a_kept_vm_counts_against_max_but_is_no_capacity() -> None:
    """max 2: one kept VM (its job over) leaves room for one VM; the waiting job gets it."""
    config = make_config(max_linux=2)
    book = queued(Book(), 5, 6)
    debug = kept(vm(1, reports="done"))
    plan = Case(book=book, vms=[debug], runners=[], config=config).plan()
    creates = [a.name for a in plan.of(Kind.CREATE)]
    assert creates == [name(5)]
    assert plan.kept == {"linux": 1, "gpu": 0}


def test_a_kept_vm_that_never_registered_does_not_hold_its_job_back() -> None:
    """The operator keeps a VM that never booted to debug it: its job gets another VM."""
    book = queued(Book(), 1)
    stuck = kept(vm(1, age=30))
    plan = Case(book=book, vms=[stuck], runners=[], answers=answered(1, "queued")).plan()
    assert [a.name for a in plan.of(Kind.CREATE)] == [name(1, 1)]


def test_a_completed_job_does_not_delete_its_kept_vm() -> None:
    config = make_config()
    plan = planner.plan_deletes(config, Book(), NOW, "linux", [name(1), name(2)], "job completed", kept={name(1)})
    assert [a.name for a in plan.of(Kind.DELETE)] == [name(2)]


def test_keep_for_is_validated() -> None:
    assert stack({"garo:keepFor": 7200}).group("linux").keep_for == 7200
    with pytest.raises(ConfigError, match=r"garo.keepFor"):
        stack({"garo:keepFor": 30 * 24 * 3600})
    with pytest.raises(ConfigError, match=r"keepFor"):
        stack({"garo:keepFor": 10})


# ---------------------------------------------------------------------- priorities


def test_classes_match_first_rule_with_every_list_matching() -> None:
    config = stack({"garo:priorities": PRIORITIES})
    assert priority_class(config.priorities, "octo-org/api", "Deploy prod") == "deploy"
    assert priority_class(config.priorities, "other/api", "Deploy prod") == "normal"
    assert priority_class(config.priorities, "other/api", "Nightly") == "background"
    assert priority_class(config.priorities, "octo-org/api", "CI") == "normal"


@pytest.mark.parametrize(
    "rules,message",
    [
        ([{"class": "urgent", "workflows": ["x"]}], r"priorities\[0\]\.class"),
        ([{"class": "deploy"}], r"needs 'repositories' or 'workflows'"),
        ([{"class": "deploy", "repositories": ["no-slash"]}], r"repositories\[0\]"),
        ([{"class": "deploy", "workflows": ["x"], "when": "always"}], r"priorities\[0\]\.when"),
        ({"class": "deploy"}, r"expected a list"),
    ],
)
def test_validate_refuses_bad_classes(rules: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        stack({"garo:priorities": rules})


def test_aging_lifts_a_job_one_class_per_period() -> None:
    config = stack({"garo:priorities": PRIORITIES, "garo:priorityAging": 600})
    book = Book()
    job = book.observe_job(1, "linux", "x/y", "queued", NOW, workflow="Nightly")
    assert [effective_rank(config, job, NOW + t) for t in (0, 599, 600, 1200, 99999)] == [2, 2, 1, 0, 0]


def test_at_max_the_next_slot_goes_to_the_highest_class_first_come_first_served() -> None:
    config = stack({"garo:priorities": PRIORITIES}, max_linux=2)
    book = Book()
    for job, workflow in ((1, "CI"), (2, "Nightly"), (3, "Deploy"), (4, "Deploy"), (5, "CI")):
        book.observe_job(job, "linux", REPO, "queued", NOW - 100 + job, workflow=workflow)
    plan = Case(book=book, vms=[], runners=[], config=config).plan()
    assert [a.name for a in plan.of(Kind.CREATE)] == [name(3), name(4)]
    assert [j.id for j in by_priority(config, book.queued("linux"), NOW)] == [3, 4, 1, 5, 2]


def test_contention_max_2_ten_jobs_deploys_first_and_nobody_starves() -> None:
    """max 2, ten queued jobs, each runs 5 minutes on the VM made for it; new jobs keep coming.

    Deploy jobs get the first slots; a background job still starts, because
    aging lifts it past the normal jobs queued after it.
    """
    config = stack({"garo:priorities": PRIORITIES, "garo:priorityAging": 600}, max_linux=2)
    book = Book()
    workflows = ["Nightly", "CI", "CI", "Deploy", "CI", "Nightly", "Deploy", "CI", "CI", "Deploy"]
    for job, workflow in enumerate(workflows, start=1):
        book.observe_job(job, "linux", REPO, "queued", NOW + job, workflow=workflow)
    started: list[int] = []
    running: dict[int, float] = {}  # job -> when it ends
    now, next_id = NOW + 20, 11
    while len(started) < 10 + 12:
        for job in [j for j, end in running.items() if end <= now]:
            del running[job]
            book.observe_job(job, "linux", REPO, "completed", now)
        vms = [replace(vm(j, age=60), created_at=now - 60) for j in running]
        busy = [runner(v, busy=True, rid=i + 1) for i, v in enumerate(vms)]
        plan = planner.plan_reconcile(config, book, Case(vms=vms, runners=busy).snapshot(), now)
        for create in plan.of(Kind.CREATE):
            job = create.job_id  # type: ignore[attr-defined]
            book.observe_job(job, "linux", REPO, "in_progress", now, runner_name=create.name)
            running[job] = now + 300
            started.append(job)
        # A steady stream of normal jobs: without aging, a background job would never start.
        book.observe_job(next_id, "linux", REPO, "queued", now, workflow="CI")
        next_id += 1
        now += 60
    assert started[:3] == [4, 7, 10]  # the three deploys, in arrival order
    assert {1, 6} <= set(started)  # both background jobs started despite the stream of CI jobs
    waited = {job: i for i, job in enumerate(started)}
    assert waited[1] < waited[12]  # the first background job overtook normal jobs that came later


# ---------------------------------------------------------------------- integration: the whole agent


def test_a_kept_vm_survives_its_jobs_completion_and_reconcile_until_the_keep_expires() -> None:
    """The operator keeps a VM while its job runs (`garo keep --for 30m`); nothing deletes it for 30 minutes."""
    from tests.agent.world import World

    world = World()
    world.configure(**{"garo:keepFor": 3600})
    job = world.queue()
    world.step()
    world.advance(25)
    world.step()
    world.advance(1)
    assert job.status == "in_progress"
    vm_name = job.runner.name  # type: ignore[union-attr]
    world.backend.set_metadata("linux", vm_name, {KEEP_KEY: str(int(world.now + 1800))})  # what `garo keep` writes
    world.advance(5)
    world.finish(job)
    world.step()  # the completed event: the VM stays
    assert [i.name for i in world.instances("linux")] == [vm_name]
    other = world.queue()  # a new job still gets a VM of its own: the kept one is no capacity
    for _ in range(20):  # 20 minutes of reconcile passes
        world.advance(60)
        world.step()
    assert vm_name in {i.name for i in world.instances("linux")}
    assert other.status == "in_progress" and other.runner.name != vm_name  # type: ignore[union-attr]
    for _ in range(15):  # the keep expires at 30 minutes; two passes confirm the deletion
        world.advance(60)
        world.step()
    assert vm_name not in {i.name for i in world.instances("linux")}
