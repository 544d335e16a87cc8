"""What the agent reads and reports stays true when listings repeat (the observer and metrics reuse them).

The observer reuses what it picked from a listing equal to the last one, and the
metrics set a gauge only when its value changes: a change between listings must
still show, and a gauge moved by other means must still be set back.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent.metrics import AgentMetrics
from scaler.backends.base import InstanceState
from tests.agent.world import DEPARTMENT, World


def _vm(job: int) -> str:
    return naming.instance_name(DEPARTMENT, "linux", job, 0)


def _listed(world: World) -> dict[str, str]:
    """Our runners and their status from a fresh listing (the observer serves one per instant)."""
    world.now += 1.0
    return {name: r.status for name, r in (world.agents[0].observer.runners(0.0) or {}).items()}


def test_a_runner_that_changes_between_equal_looking_listings_is_seen() -> None:
    world = World()
    first = _vm(101)
    world.github.generate_jit_config(first, 1, ["self-hosted"])
    foreign = world.github.generate_jit_config("someone-elses-runner", 1, ["self-hosted"])
    assert _listed(world) == {first: "offline"}
    assert _listed(world) == {first: "offline"}  # the same listing again
    runner = next(r for r in world.github.runners.values() if r.name == first)
    world.github.boot(runner.secret)
    assert _listed(world) == {first: "online"}
    world.github.delete_runner(foreign.runner_id)
    second = _vm(102)
    world.github.generate_jit_config(second, 1, ["self-hosted"])
    assert _listed(world) == {first: "online", second: "offline"}


def test_a_vm_that_changes_between_listings_is_seen() -> None:
    world = World()
    observer = world.agents[0].observer
    name = _vm(201)
    world.backend.create("linux", [name], {name: {}})
    assert observer.snapshot(["linux"]).instances["linux"][name].state is InstanceState.CREATING
    assert observer.snapshot(["linux"]).instances["linux"][name].state is InstanceState.CREATING
    world.advance(60.0)  # booted
    assert observer.snapshot(["linux"]).instances["linux"][name].state is InstanceState.RUNNING
    world.backend.delete("linux", [name])
    world.advance(60.0)
    assert name not in observer.snapshot(["linux"]).instances["linux"]


def test_gauges_report_the_last_value_however_they_got_there() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)

    def desired() -> float | None:
        return registry.get_sample_value("garo_desired_vms", {"group": "linux"})

    metrics.desired.labels("linux").set(3)
    metrics.desired.labels("linux").set(3)
    assert desired() == 3
    metrics.desired.labels("linux").inc()
    assert desired() == 4
    metrics.desired.labels("linux").set(3)  # back to a value it was set to before
    assert desired() == 3

    def vms(state: str) -> float | None:
        return registry.get_sample_value("garo_vms", {"group": "linux", "state": state})

    metrics.set_vms("linux", {"running": 2})
    metrics.vms.labels("linux", "running").set(7)  # set by other means
    metrics.set_vms("linux", {"running": 5})
    metrics.set_vms("linux", {"running": 5})
    assert vms("running") == 5 and vms("creating") == 0


def test_a_removed_or_cleared_series_starts_again_at_zero_despite_the_cached_children() -> None:
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)
    metrics.events.labels("queued", "ok").inc(3)
    metrics.events.remove("queued", "ok")
    metrics.events.labels("queued", "ok").inc()
    assert registry.get_sample_value("garo_events_total", {"action": "queued", "outcome": "ok"}) == 1.0
    metrics.events.clear()
    assert registry.get_sample_value("garo_events_total", {"action": "queued", "outcome": "ok"}) is None
