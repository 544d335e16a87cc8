"""Naming, capacity policy and the event/ack rules a user relies on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent, Kind
from scaler.agent.actions import Create, Plan
from scaler.agent.policy import Schedule, plan_capacity, warm_target
from scaler.agent.state import Book, Sighting
from scaler.backends.base import CreateResult, Instance
from scaler.backends.local import LocalBackend
from scaler.bus.base import BusUnavailable
from scaler.config import WarmPool
from scaler.github.models import GitHubError
from scaler.github.sim import SimJob
from tests.agent.world import World, make_config


def test_instance_names_are_stable_valid_and_distinct() -> None:
    name = naming.instance_name("eng", "linux", 5000000001)
    assert name == "garo-eng-linux-5000000001" == naming.instance_name("eng", "linux", "5000000001")
    long = naming.instance_name("a" * 20, "b" * 20, 9223372036854775807, generation=99)
    assert len(long) <= 63 and long.startswith("garo-" + "a" * 20 + "-")
    assert naming.instance_name("a" * 20, "b" * 20, 1) != naming.instance_name("a" * 20, "b" * 19 + "c", 1)
    assert naming.job_of("eng", "linux", naming.instance_name("eng", "linux", 42, 3)) == 42
    assert naming.job_of("eng", "linux", naming.warm_name("eng", "linux", 0)) is None
    assert naming.group_of("eng", ["a", "a-b"], naming.instance_name("eng", "a-b", 7)) == "a-b"
    for bad in ("0", "-1", "x1", "1" * 20):
        with pytest.raises(ValueError):
            naming.instance_name("eng", "linux", bad)


def test_capacity_is_busy_plus_queued_plus_warm_capped_by_max() -> None:
    group = make_config(max_linux=5, warm=1).group("linux")
    plan = plan_capacity(group, active=1, busy=1, queued=3, standby=0, now=0)
    assert (plan.desired, plan.create) == (5, 4)
    plan = plan_capacity(group, active=2, busy=0, queued=1, standby=5, now=0, finished=0)
    assert (plan.resume, plan.create) == (0, 0)
    # finished VMs hold quota: never above max
    plan = plan_capacity(group, active=1, busy=1, queued=9, standby=0, now=0, finished=3)
    assert plan.create == 1


def test_warm_pool_follows_office_hours() -> None:
    pool = WarmPool(size=4, schedule="Mon-Fri 07:00-19:00 Europe/Amsterdam", off_hours_size=1)
    monday_noon = dt.datetime(2025, 3, 3, 12, 0, tzinfo=dt.UTC).timestamp()
    saturday = dt.datetime(2025, 3, 8, 12, 0, tzinfo=dt.UTC).timestamp()
    monday_night = dt.datetime(2025, 3, 3, 22, 0, tzinfo=dt.UTC).timestamp()
    assert [warm_target(pool, t) for t in (monday_noon, saturday, monday_night)] == [4, 1, 1]
    overnight = Schedule.parse("Fri-Mon 22:00-06:00")
    assert overnight.active(dt.datetime(2025, 3, 4, 3, 0, tzinfo=dt.UTC).timestamp())  # Tue 03:00 belongs to Mon
    assert not overnight.active(dt.datetime(2025, 3, 5, 3, 0, tzinfo=dt.UTC).timestamp())


def test_burst_becomes_one_create_call_and_one_vm_per_job() -> None:
    world = World()
    world.configure(max_linux=50)
    calls: list[int] = []
    create = world.backend.create
    world.backend.create = lambda g, names, md: calls.append(len(names)) or create(g, names, md)  # type: ignore[method-assign]
    jobs = [world.queue() for _ in range(30)]
    world.step()
    assert calls == [30]
    assert {i.name for i in world.active("linux")} == {naming.instance_name("eng", "linux", j.id) for j in jobs}
    assert world.bus.pending() == 30  # held, not acked: the VMs do not exist yet, so no JIT config either
    world.advance(20)  # the VMs exist (boot delay)
    world.step()
    assert world.bus.pending() == 0  # every queued message acked: VM exists and has its JIT config
    assert world.github.calls["generate_jit_config"] == 30  # one config per VM, none wasted on unborn VMs


def test_full_cycle_and_foreign_events() -> None:
    world = World()
    job = world.queue()
    world.bus.publish_event("other", "linux", "queued", world.github.payload(job))  # another department's
    world.step()
    world.advance(25)
    world.step()  # the VM exists: it gets its JIT config
    world.advance(1)  # ... and its runner starts; GitHub hands it the job
    assert job.status == "in_progress"
    world.advance(5)
    world.finish(job)
    world.step()
    assert world.instances("linux") == [] and world.github.runners == {}
    assert world.bus.pending() == 0


def test_jit_budget_exhausted_keeps_message_unacked_then_recovers() -> None:
    world = World()
    world.github.faults["generate_jit_config"] = [GitHubError(403, "secondary rate limit")] * 3
    job = world.queue()
    world.step()
    world.advance(20)  # the VM exists
    world.step()
    assert len(world.instances("linux")) == 1 and world.bus.pending() == 1  # VM exists, message held
    for _ in range(6):
        world.advance(5)
        world.step()
    assert world.github.calls["generate_jit_config"] == 4  # refused three times, then given
    assert world.bus.pending() == 0
    world.advance(1)
    assert job.status == "in_progress"


def test_faults_in_compute_and_github_converge() -> None:
    from scaler.backends.base import BackendError, Failure

    world = World()
    create = world.backend.create
    failures = iter([BackendError("503", reason=Failure.UNAVAILABLE), BackendError("429", reason=Failure.THROTTLED)])

    def flaky(group, names, md):  # type: ignore[no-untyped-def]
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return create(group, names, md)

    world.backend.create = flaky  # type: ignore[method-assign]
    world.github.faults["list_runners"] = [GitHubError(502, "bad gateway")]
    jobs = [world.queue() for _ in range(3)]
    for _ in range(12):
        world.advance(5)
        world.step()
    assert all(j.status == "in_progress" for j in jobs)
    assert len(world.instances("linux")) == 3


def test_capacity_error_on_create_is_retried_not_dropped() -> None:
    world = World()
    world.backend.capacity = {"linux": 1}
    jobs = [world.queue() for _ in range(2)]
    world.step()
    # Both held: one VM is still being created, the other was refused for capacity.
    assert len(world.instances("linux")) == 1 and world.bus.pending() == 2
    world.backend.capacity = {}
    for _ in range(4):
        world.advance(10)
        world.step()
    assert all(j.status == "in_progress" for j in jobs)


def test_reconcile_dry_run_changes_nothing_and_deletions_need_two_passes() -> None:
    world = World()
    world.backend.create("linux", ["garo-eng-linux-w-0"], {})  # a VM nobody asked for
    world.advance(200)  # past time-to-start, never registered
    plan = world.agents[0].reconcile(dry_run=True)
    assert [a.kind for a in plan.actions] == [Kind.MARK]
    assert len(world.instances("linux")) == 1
    world.agents[0].reconcile()
    assert len(world.instances("linux")) == 1  # first sighting
    world.agents[0].reconcile()
    assert len(world.instances("linux")) == 1  # a second pass at once is too soon for a VM whose job is not over
    world.advance(5)
    world.agents[0].reconcile()
    assert world.active("linux") == []


def test_a_job_waiting_for_approval_gets_no_vm_until_github_queues_it() -> None:
    world = World()
    labels = world.config.group("linux").labels
    job = SimJob(5_100_000_001, "octo-org/app", tuple(labels), status="waiting", created_at=world.now)
    world.github.jobs[job.id] = job
    world.bus.publish_event("eng", "linux", "waiting", world.github.payload(job))
    world.step()
    world.advance(60)
    world.step()
    assert world.instances("linux") == [], "an environment approval can take hours: no VM meanwhile"
    job.status = "queued"  # approved
    world.bus.publish_event("eng", "linux", "queued", world.github.payload(job))
    world.step()
    assert [i.name for i in world.instances("linux")] == [naming.instance_name("eng", "linux", job.id)]


def test_a_name_github_already_registered_does_not_block_the_others() -> None:
    world = World()
    world.configure(max_linux=10)
    jobs = [world.queue() for _ in range(3)]
    world.step()
    world.advance(20)
    world.github.faults["generate_jit_config"] = [GitHubError(409, "Already exists")]
    world.step()
    configured = [
        name
        for name in (naming.instance_name("eng", "linux", j.id) for j in jobs)
        if world.backend.get_metadata("linux", name).get("garo-jit-config")
    ]
    assert len(configured) == 2, "the other VMs got their configs in the same pass"


def test_a_late_completed_for_a_reused_name_does_not_delete_the_new_vm() -> None:
    world = World()
    world.configure(warm=1)
    world.step()  # the warm VM w-0 is created
    world.advance(20)
    world.step()  # ... exists, gets its config
    world.advance(1)  # ... and its runner registers
    world.step()
    warm = naming.warm_name("eng", "linux", 0)
    assert [r.name for r in world.github.runners.values()] == [warm]
    # A redelivered `completed` of an older job that ran on an earlier VM of that name.
    stale = SimJob(5_000_000_999, "octo-org/app", tuple(world.config.group("linux").labels), status="completed")
    payload = world.github.payload(stale, "success")
    payload["workflow_job"].update(runner_name=warm, runner_id=999_999)
    world.bus.publish_event("eng", "linux", "completed", payload)
    world.step()
    assert [i.name for i in world.instances("linux")] == [warm], "the warm VM now under that name survives"


def _running(count: int) -> tuple[World, list[SimJob]]:
    """A world with ``count`` jobs running, each on its own VM (max 10)."""
    world = World()
    world.configure(max_linux=10)
    jobs = [world.queue() for _ in range(count)]
    world.step()
    world.advance(20)  # the VMs exist
    world.step()
    world.advance(1)  # runners start; GitHub hands out the jobs
    world.step()
    assert all(j.status == "in_progress" for j in jobs)
    return world, jobs


def test_a_burst_of_completions_is_one_delete_call_per_group() -> None:
    world, jobs = _running(5)
    deletes: list[list[str]] = []
    delete = world.backend.delete
    world.backend.delete = lambda g, names: deletes.append(list(names)) or delete(g, names)  # type: ignore[method-assign]
    for job in jobs:
        world.finish(job)
    world.step()
    assert len(deletes) == 1 and len(deletes[0]) == 5
    assert world.instances("linux") == [] and world.bus.pending() == 0


def test_completions_send_no_runner_delete_for_runners_listed_busy_but_a_lingering_runner_goes() -> None:
    """Ephemeral runners deregister themselves: a listing from before the jobs ended is no reason to DELETE."""
    world, jobs = _running(3)
    world.agents[0].reconcile()  # a fresh runner listing: all three runners busy
    for job in jobs[:2]:
        world.finish(job)
    world.step()
    assert world.github.calls.get("delete_runner", 0) == 0
    assert sorted(i.name for i in world.instances("linux")) == [jobs[2].runner.name]  # type: ignore[union-attr]

    lingering = jobs[2].runner
    assert lingering is not None
    world.finish(jobs[2])
    lingering.job = None
    world.github.runners[lingering.id] = lingering  # it failed to deregister itself
    world.advance(10)  # the next listing is taken after the job ended: the runner is listed idle
    world.step()
    assert lingering.id not in world.github.runners
    assert world.instances("linux") == []


def test_a_group_that_cannot_be_listed_does_not_stop_the_others() -> None:
    from scaler.backends.base import BackendError, Failure

    world = World()
    gpu_job = world.queue("gpu")
    world.step()
    world.advance(20)
    world.step()  # the gpu VM exists and its runner is registered
    gpu_runners = {r.name for r in world.github.runners.values()}
    assert gpu_runners
    listing = world.backend.list

    class GpuUnlisted(LocalBackend):
        """The agent's view of the cloud: the gpu group's MIG cannot be read (the fleet itself runs on)."""

        def __init__(self, inner: LocalBackend) -> None:
            self.inner = inner

        def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
            return self.inner.create(group, names, metadata)

        def delete(self, group: str, names: Sequence[str]) -> None:
            self.inner.delete(group, names)

        def list(self, group: str) -> Sequence[Instance]:
            if group == "gpu":
                raise BackendError("404 instanceGroupManagers/garo-eng-gpu not found", reason=Failure.NOT_FOUND)
            return self.inner.list(group)

        def resume_standby(self, group: str, count: int) -> Sequence[str]:
            return self.inner.resume_standby(group, count)

        def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
            self.inner.set_metadata(group, name, items)

    world.agents[0] = Agent(
        world.config,
        GpuUnlisted(world.backend),
        world.github,
        world.bus,
        clock=world.clock,
        registry=CollectorRegistry(),
    )
    job = world.queue("linux")
    for _ in range(3):
        world.advance(5)
        world.step()
    assert [i.name for i in listing("linux")] == [naming.instance_name("eng", "linux", job.id)]
    plan = world.agents[0].reconcile()  # reconcile goes on for the groups it can see
    assert "linux" in plan.desired and "gpu" not in plan.desired
    assert gpu_runners <= {r.name for r in world.github.runners.values()}, "a group we cannot see is not orphaned"
    assert gpu_job.status in ("queued", "in_progress")


def test_a_vm_another_replica_created_is_not_this_replicas_to_configure() -> None:
    """Replicas that asked to create the same name: only its maker gives it a JIT config.

    The cloud answers "created" for a name that exists. A replica that took such
    a VM as its own, and whose delivery lagged (GitHub retries), would give it a
    second config after its first runner came and went: the used VM would then
    wait with an offline runner until time-to-start, billing.
    """
    world = World()
    mine, theirs = naming.instance_name("eng", "linux", 7), naming.instance_name("eng", "linux", 8)
    world.backend.create("linux", [theirs], {})  # another replica was first
    agent = world.agents[0]
    plan = Plan(
        [Create(group="linux", name=n, reason="queued job", job_id=int(n[-1]), repo="o/r") for n in (mine, theirs)]
    )
    outcome = agent.executor.execute(plan)
    assert len(outcome.done) == 2 and outcome.added == [mine]
    assert agent.book.pending_jit == {mine: "linux"}


def test_a_bus_outage_costs_one_failed_call_per_iteration_and_loses_nothing() -> None:
    """While the bus is down the agent does not wait out the bus's timeout on every ack and lease.

    Each such call would block as long as a pull does and push the next reconcile
    pass back (a VM whose completed event is stuck behind the outage would bill
    longer). Unacknowledged messages come back, so skipping them loses nothing.
    """
    world = World()
    jobs = [world.queue() for _ in range(2)]
    world.step()  # held: the VMs do not exist yet
    calls: list[str] = []
    real = {name: getattr(world.bus, name) for name in ("pull", "ack", "modify_ack_deadline")}

    def down(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise BusUnavailable("bus locked")

        return call

    for name in real:
        setattr(world.bus, name, down(name))
    world.advance(30)  # the VMs exist and leases would be due for extension
    world.step()
    assert calls == ["pull"]
    for name, call in real.items():
        setattr(world.bus, name, call)
    world.advance(world.bus.lease + 5)  # the messages whose acks were skipped come back
    world.step()
    world.advance(5)
    world.step()
    assert {i.name for i in world.active("linux")} >= {naming.instance_name("eng", "linux", j.id) for j in jobs}
    assert world.bus.pending() == 0


def test_while_the_bus_is_down_no_pull_delays_a_pass_due_before_the_pull_could_fail() -> None:
    """A down bus fails a pull only after its own timeout (SQLite's busy wait: seconds).

    A finished VM's confirming pass is due a fraction of a second after the pass
    that first saw it; a pull started in between held that pass back by the
    whole timeout, every replica at once: the chaos run's 5-8 s leaks
    (docs/reliability.md, 1 (b)).
    """
    world = World()
    agent = world.agents[0]
    agent.sleep = world.advance  # the agent's waits pass in the world's time
    pulls: list[float] = []

    def locked(*args: Any, **kwargs: Any) -> Any:
        pulls.append(world.now)
        world.advance(2.0)  # the bus's timeout
        raise BusUnavailable("bus locked")

    world.bus.pull = locked  # type: ignore[method-assign]
    world.step()  # reconcile on start, then a pull that fails after the timeout
    assert len(pulls) == 1
    due = world.now + 0.25
    agent._next_reconcile = due  # as after a pass that first saw a finished VM
    world.step()
    assert len(pulls) == 1 and world.now == due  # no pull: it waited for the pass instead
    world.step()  # the pass runs when due; then the bus is tried again
    assert agent.next_reconcile > due and len(pulls) == 2


def test_a_started_runner_cancels_this_replicas_pending_config_for_its_vm() -> None:
    """Another replica configured the VM this one created, and a job started there: no second config.

    This replica's own delivery was held up (GitHub errors) and GitHub's runner
    list could not be read; had it delivered after that runner's one job, the used
    VM would have waited with an offline runner until time-to-start, billing.
    """
    world = World()
    job = world.queue()
    vm = naming.instance_name("eng", "linux", job.id)
    world.step()
    agent = world.agents[0]
    world.github.faults["generate_jit_config"] = [GitHubError(502, "Bad Gateway")] * 50
    world.advance(20)
    world.step()  # the VM exists; its config could not be generated yet
    assert vm in agent.book.pending_jit
    faults = world.github.faults.pop("generate_jit_config")
    other = world.github.generate_jit_config(vm, 1, list(world.config.group("linux").labels))  # another replica's
    assert world.github.boot(other.encoded)
    world.advance(1)  # GitHub hands the job to that runner: in_progress naming the VM
    world.github.faults["generate_jit_config"] = faults
    world.github.faults["list_runners"] = [GitHubError(502, "Bad Gateway")] * 50
    world.step()
    assert vm not in agent.book.pending_jit


def test_a_quick_confirming_pass_does_not_trim_a_vm_whose_job_is_not_over() -> None:
    """Idle beyond the warm pool, say: it must stay a candidate for most of a pass period (the next job may take it)."""
    book, key = Book(), "vm:linux:garo-eng-linux-w-3"
    book.end_pass({key}, {key: Sighting(at=100.0, listing=99.9, over=False)})
    assert not book.confirmed(key, Sighting(at=100.25, listing=100.2, over=False), min_age=3.0)
    assert not book.confirmed(key, Sighting(at=100.25, listing=100.2, over=True), min_age=3.0)
    assert book.confirmed(key, Sighting(at=104.0, listing=103.9, over=False), min_age=3.0)
    over = "vm:linux:garo-eng-linux-5000000001"
    book.end_pass({key, over}, {over: Sighting(at=104.0, listing=103.9, over=True)})
    assert book.confirmed(over, Sighting(at=104.25, listing=104.2, over=True), min_age=3.0)
    assert not book.confirmed(over, Sighting(at=104.25, listing=103.9, over=True), min_age=3.0)
