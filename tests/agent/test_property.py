"""Random event streams against 1-3 agent replicas: the fleet always converges.

Each example drives a simulated world (GitHub simulator, at-least-once bus that
duplicates, reorders and loses in_progress/completed events, local fleet) with a
random sequence of jobs queued, time passing, jobs finishing, agents stepping,
agents killed mid-call and restarted. After a reconcile every still-queued job
has capacity; then the world settles and we check what a user would notice: every job ran, nothing is left behind, no group went over
its maximum (by more than the number of replicas), a job never had two VMs
waiting for it, and no VM outlived its job by more than about one reconcile
interval. It runs twice: on the plain local backend, and on the local backend
refusing a seeded share of calls and names with AWS's error codes, mapped by
``AwsBackend``'s own translation (issue 10).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scaler import naming
from tests.agent.world import DEPARTMENT, World

OPS = ("queue", "tick", "agent", "finish", "restart", "crash")
TICK = 5.0


class Killed(BaseException):
    """The agent process dies in the middle of whatever it was doing."""


def arm_crash(world: World, after_calls: int) -> None:
    """Kill the agent at its n-th GitHub call from now (e.g. between create and JIT delivery)."""
    enter = world.github._enter
    state = {"left": after_calls}

    def dying_enter(method: str) -> None:
        state["left"] -= 1
        if state["left"] == 0:
            world.github._enter = enter  # type: ignore[method-assign]
            raise Killed(method)
        enter(method)

    world.github._enter = dying_enter  # type: ignore[method-assign]


def check_always(world: World, replicas: int) -> None:
    # VMs that ran (or run) a job are that job's; the rest still wait for work.
    used = world.busy_names() | {name for job in world.github.jobs.values() for name in job.ran_on}
    for group in ("linux", "gpu"):
        active = world.active(group)
        assert len(active) <= world.config.group(group).max + replicas, f"{group} over max: {len(active)}"
        waiting_for: dict[int, list[str]] = {}
        for inst in active:
            job = naming.job_of(DEPARTMENT, group, inst.name)
            if job is not None and inst.name not in used:
                waiting_for.setdefault(job, []).append(inst.name)
        doubles = {job: names for job, names in waiting_for.items() if len(names) > 1}
        assert not doubles, f"a job has two VMs waiting for it: {doubles}"


def check_capacity_after_reconcile(world: World, replicas: int) -> None:
    """Every job still queued has a VM on its way or idle for it, as far as the group's max allows.

    Leases held by replicas that died expire first (the bus hands their
    messages to the living), then every replica pulls and reconciles once.
    """
    world.advance(world.bus.lease + TICK)
    with world.calm():  # a cloud that refuses this very pass leaves a job waiting; settle() checks it still runs
        for i in range(replicas):
            step_agent(world, i)
            world.agents[i].reconcile()
            world.note_instances()
    busy = world.busy_names()
    for group in ("linux", "gpu"):
        queued = [job for job in world.github.queued() if world.group_of_job[job.id] == group]
        active = world.active(group)
        # A VM is spare unless it runs a job or is the very VM (same name *and* creation) that ran one.
        spare = [i for i in active if i.name not in busy and (i.name, i.created_at) not in world.finished_at]
        room = world.config.group(group).max - (len(active) - len(spare))
        assert len(spare) >= min(len(queued), room), (
            f"{group}: {len(queued)} queued jobs, {len(spare)} VMs for them, room for {room}"
        )


def step_agent(world: World, i: int) -> None:
    try:
        world.step(i)
    except Killed:
        world.restart(i)


def settle(world: World, replicas: int) -> None:
    interval = world.config.reconcile_interval
    bound = interval + max(5.0, interval / 6) + 2 * TICK
    quiet_rounds = 0
    for _ in range(400):
        world.advance(TICK)
        for i in range(replicas):
            step_agent(world, i)
        for job in list(world.github.running()):
            if world.now - (job.started_at or 0) >= 10:
                world.finish(job)
        check_always(world, replicas)
        live = {(i.name, i.created_at) for g in ("linux", "gpu") for i in world.instances(g)}
        for (name, created), ended in world.finished_at.items():
            alive = (name, created) in live
            assert not alive or world.now - max(ended, world.last_restart) <= bound, f"{name} outlived its job"
        idle = not world.github.queued() and not world.github.running()
        fleet_empty = not world.instances("linux") and not world.instances("gpu")
        quiet_rounds = quiet_rounds + 1 if idle and fleet_empty and not world.github.runners else 0
        if quiet_rounds >= 3:
            break
    assert not world.github.queued(), "jobs never got a runner"
    assert not world.github.running()
    assert not world.instances("linux") and not world.instances("gpu"), "VMs left behind"
    assert not world.github.runners, "runners left registered"


@settings(
    max_examples=int(os.environ.get("GARO_PROPERTY_EXAMPLES", "25")),
    # `make test` explores the same 2,000 examples every run (a red CI must be reproducible);
    # a bare run, or `--hypothesis-seed=N`, explores new ones.
    derandomize=os.environ.get("GARO_PROPERTY_DERANDOMIZE") == "1",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**16),
    replicas=st.integers(1, 3),
    duplicate=st.sampled_from([0.0, 0.3]),
    drop=st.sampled_from([0.0, 0.3]),
    shuffle=st.booleans(),
    ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 9)), min_size=5, max_size=50),
)
# Counterexamples hypothesis found, kept so they run every time:
# a replacement VM reusing a stolen VM's name (and being deleted by the thief's late `completed`);
@example(0, 1, 0.0, 0.0, False, [("queue", 0), ("crash", 1), ("queue", 0), ("agent", 0), ("tick", 3), ("finish", 0)])
# a job acked on a spare VM that was then deleted as never registered;
@example(
    0,
    1,
    0.0,
    0.0,
    False,
    [("queue", 0), ("crash", 8), ("queue", 0), ("agent", 0), ("queue", 0), ("tick", 1), ("tick", 9)],
)
# restarted agents that knew nothing of a job whose VM another job took (in_progress lost), busy or deleted.
@example(
    0,
    1,
    0.0,
    0.3,
    False,
    [("queue", 0), ("crash", 8), ("queue", 0), ("tick", 0), ("tick", 1), ("agent", 0), ("restart", 0), ("tick", 8)],
)
@example(
    937,
    1,
    0.0,
    0.3,
    True,
    [("queue", 1), ("crash", 1), ("queue", 1), ("agent", 0), ("restart", 0), ("tick", 3), ("finish", 0)],
)
# after a restart, a replica gave a job whose VM another replica had replaced (and a third deleted) a second VM.
@example(
    0,
    3,
    0.0,
    0.0,
    False,
    [
        ("queue", 0),
        ("queue", 0),
        ("queue", 1),
        ("agent", 0),
        ("queue", 0),
        ("queue", 0),
        ("queue", 0),
        ("queue", 0),
        ("queue", 0),
        ("queue", 1),
        ("queue", 7),
        ("tick", 3),
        ("agent", 0),
        ("queue", 1),
        ("tick", 0),
        ("restart", 0),
        ("agent", 0),
        ("finish", 2),
    ],
)
# Found with AWS's failure vocabulary (2026-11-30): after a restart, a job whose VM another job took is known only
# from that VM's name. Without its repository it was given up as covered (seed 248); with a spent VM named after
# it, it counted as having its own VM and stayed covered when the spare VM it was acked on went (seed 246).
@example(
    246,
    1,
    0.0,
    0.0,
    False,
    [("queue", 1), ("agent", 0), ("queue", 3), ("queue", 7), ("agent", 0), ("tick", 1), ("tick", 9), ("agent", 0),
     ("restart", 0)],
)  # fmt: skip
@example(
    248,
    1,
    0.0,
    0.0,
    False,
    [("queue", 0), ("queue", 0), ("queue", 0), ("queue", 0), ("queue", 1), ("queue", 7), ("agent", 0), ("tick", 5),
     ("agent", 0), ("restart", 0), ("tick", 0), ("agent", 0)],
)  # fmt: skip
# the same with one more tick (a variant that reached the seed-248 bug under the faster reconcile cadence)
@example(
    248,
    1,
    0.0,
    0.0,
    False,
    [("queue", 0), ("queue", 0), ("queue", 0), ("queue", 0), ("queue", 1), ("queue", 7), ("agent", 0), ("tick", 5),
     ("agent", 0), ("restart", 0), ("tick", 0), ("agent", 0), ("tick", 0)],
)  # fmt: skip
@pytest.mark.parametrize("cloud", ["local", "aws"])
def test_random_event_streams_converge(
    cloud: str, seed: int, replicas: int, duplicate: float, drop: float, shuffle: bool, ops: list[tuple[str, int]]
) -> None:
    """``aws``: the same invariants while the backend refuses calls and names in AWS's words (tests/agent/aws_faults.py)."""
    world = World(seed, replicas, duplicate=duplicate, drop=drop, shuffle=shuffle, cloud=cloud)
    for op, arg in ops:
        if op == "queue":
            for _ in range(arg % 4 + 1):
                world.queue("gpu" if arg % 3 == 0 else "linux")
        elif op == "tick":
            world.advance(TICK * (arg + 1))
        elif op == "agent":
            step_agent(world, arg % replicas)
        elif op == "finish":
            running = world.github.running()
            if running:
                world.finish(running[arg % len(running)])
        elif op == "restart":
            world.restart(arg % replicas)
        elif op == "crash":
            arm_crash(world, arg % 3 + 1)
            step_agent(world, arg % replicas)
            world.github.__dict__.pop("_enter", None)
        check_always(world, replicas)
    check_capacity_after_reconcile(world, replicas)
    settle(world, replicas)
