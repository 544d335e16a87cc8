"""``garo reconcile --dry-run``: exactly the actions a real pass then carries out, and nothing changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent, Kind
from scaler.agent.actions import Plan
from scaler.agent.executor import Outcome
from scaler.backends.base import JOB_KEY, REPO_KEY, CreateResult, Instance
from scaler.backends.local import LocalBackend
from tests.agent.world import World

READ_ONLY_GITHUB = {"list_runners", "get_job"}


class RecordingBackend:
    """The world's fleet, with every call the agent makes written down."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        self.calls.append("create")
        return self.inner.create(group, names, metadata)

    def delete(self, group: str, names: Sequence[str]) -> None:
        self.calls.append("delete")
        self.inner.delete(group, names)

    def list(self, group: str) -> Sequence[Instance]:
        self.calls.append("list")
        return self.inner.list(group)

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        self.calls.append("resume_standby")
        return self.inner.resume_standby(group, count)

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        self.calls.append("set_metadata")
        self.inner.set_metadata(group, name, items)


def busy_world() -> tuple[World, Agent, RecordingBackend]:
    """A fleet with something of every kind to do: lost events, leftovers, a stale VM, queued jobs."""
    world = World(0, drop=1.0)  # every in_progress and completed event is lost
    world.configure(warm=1)
    cloud = RecordingBackend(world.backend)
    agent = Agent(world.config, cloud, world.github, world.bus, clock=world.clock, registry=CollectorRegistry())
    world.agents[0] = agent
    jobs = [world.queue() for _ in range(2)]
    for _ in range(4):
        world.step()
        world.advance(10)
    waiting = world.queue()  # GitHub has it queued; its message is still on the bus
    stale = naming.instance_name("eng", "linux", waiting.id)  # its VM, from a create that timed out long ago
    world.backend.create("linux", [stale], {stale: {JOB_KEY: str(waiting.id), REPO_KEY: "octo-org/app"}})
    world.advance(150)  # past time-to-start for the stale VM
    agent.reconcile()  # first sightings
    world.finish(jobs[0])  # the VM reports its job over; the completed event is lost
    world.advance(10)
    return world, agent, cloud


def test_a_dry_run_prints_what_the_real_pass_then_does_and_changes_nothing() -> None:
    world, agent, cloud = busy_world()
    book, fleet = agent.book.copy(), {g: world.instances(g) for g in ("linux", "gpu")}
    runners, github_calls = dict(world.github.runners), dict(world.github.calls)
    cloud.calls.clear()

    dry = agent.reconcile(dry_run=True)

    assert set(cloud.calls) == {"list"}, "a dry run only lists the cloud"
    asked = {m for m, n in world.github.calls.items() if n != github_calls.get(m, 0)}
    assert asked and asked <= READ_ONLY_GITHUB, f"a dry run asks GitHub only GETs, not {asked - READ_ONLY_GITHUB}"
    assert agent.book == book, "a dry run does not even change the agent's memory"
    assert {g: world.instances(g) for g in ("linux", "gpu")} == fleet and world.github.runners == runners
    kinds = {a.kind for a in dry.actions}
    assert {Kind.DELETE, Kind.CREATE, Kind.RECORD} <= kinds, str(dry)

    executed: list[tuple[Plan, Outcome]] = []
    execute = agent.executor.execute

    def recorded(plan: Plan) -> Outcome:
        executed.append((plan, execute(plan)))
        return executed[-1][1]

    agent.executor.execute = recorded  # type: ignore[method-assign]
    real = agent.reconcile()

    assert str(real) == str(dry) and real.actions == dry.actions
    [(plan, outcome)] = executed
    assert outcome.done == dry.actions and not outcome.failed, "every printed action was carried out"
    assert len(world.instances("linux")) != len(fleet["linux"]) or world.github.runners != runners


def test_the_printed_plan_names_each_action_and_why() -> None:
    _, agent, _ = busy_world()
    text = str(agent.reconcile(dry_run=True))
    assert "group linux: desired" in text
    assert "delete      linux        garo-eng-linux-" in text and "job over (VM reports it)" in text
