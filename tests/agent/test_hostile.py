"""Forged and poison bus messages (issue 11): the agent believes the cloud and GitHub, not the bus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.backends.local import LocalBackend
from scaler.bus.sqlite import SqliteBus
from scaler.github.sim import GitHubSim, SimJob
from tests.agent.world import World


def metric(agent: Agent, action: str, outcome: str) -> float:
    value = agent.metrics.registry.get_sample_value("garo_events_total", {"action": action, "outcome": outcome})
    return value or 0.0


def running_job(world: World) -> tuple[SimJob, str]:
    """A job running on the VM made for it."""
    job = world.queue()
    world.step()
    world.advance(20)
    world.step()
    world.advance(1)  # the runner starts; GitHub hands it the job
    world.step()
    assert job.status == "in_progress" and job.runner is not None
    return job, job.runner.name


def get_job_calls(world: World) -> int:
    return world.github.calls.get("get_job", 0)


@pytest.mark.parametrize("forged_job", ["unknown to GitHub", "queued elsewhere"])
def test_a_forged_completed_for_a_busy_vm_deletes_nothing(forged_job: str, caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    job, vm = running_job(world)
    labels = tuple(world.config.group("linux").labels)
    if forged_job == "queued elsewhere":
        other = SimJob(5_000_000_778, "octo-org/app", ("no-such-label",))  # a real job, still queued at GitHub
        world.github.jobs[other.id] = other
        forged = SimJob(other.id, "octo-org/app", labels, status="completed")
    else:
        forged = SimJob(5_000_000_777, "octo-org/app", labels, status="completed")
    payload = world.github.payload(forged, "success")
    payload["workflow_job"].update(runner_name=vm, runner_id=job.runner.id if job.runner else None)
    world.bus.publish_event("eng", "linux", "completed", payload)
    with caplog.at_level("WARNING", logger="garo.agent"):
        world.step()
    assert vm in {i.name for i in world.active("linux")}, "the busy VM survives"
    assert vm in {r.name for r in world.github.runners.values()}, "its runner is not deregistered"
    assert world.bus.pending() == 0, "the forged message is acknowledged: it can never become true"
    assert metric(world.agents[0], "completed", "rejected") == 1
    assert any("not confirmed" in r.getMessage() for r in caplog.records)
    # The genuine completed still deletes at once, without asking GitHub: the book knows the job ran there.
    asked = get_job_calls(world)
    world.finish(job)
    world.step()
    assert vm not in {i.name for i in world.instances("linux")}
    assert get_job_calls(world) == asked
    assert metric(world.agents[0], "completed", "ok") == 1


def test_a_replica_that_did_not_see_the_start_believes_the_vm_metadata_not_the_message() -> None:
    world = World(replicas=2)
    job, vm = running_job(world)  # replica 0 saw the start; replica 1 knows nothing of it
    world.step(1)  # replica 1's first reconcile pass (which may ask GitHub about what it sees)
    asked = get_job_calls(world)
    world.finish(job)
    world.step(1)
    assert vm not in {i.name for i in world.instances("linux")}, "garo-job metadata names the job: deleted"
    assert get_job_calls(world) == asked, "no GitHub call needed"


def test_a_poison_message_is_dead_lettered_and_the_good_ones_get_vms(tmp_path: Path) -> None:
    """A queued event with job id 10**20 (beyond any VM name) among good ones, on the embedded bus."""
    world = World()  # for its config and GitHub; the bus here is the real SQLite one
    bus = SqliteBus(tmp_path / "bus.db", subscription="eng", max_delivery_attempts=3, clock=world.clock)
    backend = LocalBackend(None, clock=world.clock)
    github = GitHubSim(world.clock, lambda action, payload: None)
    agent = Agent(world.config, backend, github, bus, clock=world.clock, registry=CollectorRegistry(), pull_timeout=0)
    labels = tuple(world.config.group("linux").labels)
    good = [github.queue_job("octo-org/app", labels) for _ in range(2)]
    poison = github.payload(SimJob(10**20, "octo-org/app", labels))
    events = [github.payload(good[0]), poison, github.payload(good[1])]
    for i, payload in enumerate(events):
        job_id = str(payload["workflow_job"]["id"])
        attrs = {"department": "eng", "group": "linux", "action": "queued", "job_id": job_id, "delivery": f"d{i}"}
        bus.publish(json.dumps(payload).encode(), attrs)
    for _ in range(4):
        agent.run_once()
    names = {i.name for i in backend.list("linux")}
    assert {naming.instance_name("eng", "linux", j.id) for j in good} <= names
    dead = bus.dead_letters()
    assert [json.loads(m.data)["workflow_job"]["id"] for m in dead] == [10**20]
    assert metric(agent, "queued", "bad") >= 1
    bus.close()
