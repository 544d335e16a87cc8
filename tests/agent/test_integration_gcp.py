"""The real agent, end to end, against the most real stand-ins there are.

GitHub is Prism serving GitHub's own OpenAPI description (it rejects requests
that break the spec); Compute is the fake that validates every request against
``compute.v1.json``; messages travel through the embedded SQLite bus exactly
as the webhook publishes them, built from @octokit's real webhook examples.

Prism's answers are canned (its runners are not ours, its JIT runner has a
fixed name), so these tests assert the VM lifecycle and request conformance,
not GitHub's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.agent.jit_endpoint import PATH, jit_app
from scaler.backends.gcp import GcpBackend
from scaler.backends.jit_vault import IdentityVerifier
from scaler.bus.sqlite import SqliteBus
from scaler.github.client import GitHubClient
from tests.agent.gcpkit import DEPARTMENT, GROUP, MIG, REPO, Statuses, backend, gcp_config, publish
from tests.harness.compute import ComputeFake
from tests.harness.gce_identity import IdentityIssuer

JOBS = (4101, 4102, 4103)


def names_in(fake: ComputeFake, method: str) -> list[str]:
    """Instance names sent to a MIG method (createInstances bodies carry names, deleteInstances URLs)."""
    out: list[str] = []
    for short, _, _, body in fake.requests:
        if short == f"regionInstanceGroupManagers.{method}":
            out += [i["name"] if isinstance(i, dict) else i.rsplit("/", 1)[-1] for i in body["instances"]]
    return out


@pytest.fixture
def rig(
    prism_github: str, prism_session: Callable[..., requests.Session], compute_fake: ComputeFake, tmp_path: Path
) -> dict[str, object]:
    compute_fake.add_group(MIG)
    github_statuses, compute_statuses = Statuses(), Statuses()
    # GitHub's own job example lacks `created_at`, which Prism (--errors) refuses to serve.
    session = github_statuses.attach(prism_session({("GET", r"/actions/jobs/\d+$"): "dynamic=true"}))
    github = GitHubClient("octo-org", token="dev", api_url=prism_github, session=session, registry=CollectorRegistry())
    gce = backend(compute_fake, compute_statuses.attach(requests.Session()))
    now = [1_700_000_000.0]
    bus = SqliteBus(
        tmp_path / "bus.db", subscription=f"agent-{DEPARTMENT}", filter={"department": DEPARTMENT}, clock=lambda: now[0]
    )
    publisher = SqliteBus(tmp_path / "bus.db")
    agent = Agent(gcp_config(), gce, github, bus, clock=lambda: now[0], registry=CollectorRegistry(), pull_timeout=0)
    return {
        "agent": agent,
        "bus": bus,
        "publisher": publisher,
        "now": now,
        "github": github_statuses,
        "compute": compute_statuses,
    }


def test_queued_in_progress_completed_makes_and_removes_one_vm_per_job(
    rig: dict[str, object], compute_fake: ComputeFake
) -> None:
    agent, publisher, now = rig["agent"], rig["publisher"], rig["now"]
    assert isinstance(agent, Agent) and isinstance(publisher, SqliteBus) and isinstance(now, list)
    names = {job: naming.instance_name(DEPARTMENT, GROUP, job) for job in JOBS}

    for job in JOBS:
        publish(publisher, "queued", job)
    agent.step()  # reconcile on start, then the batch
    for _ in range(10):  # VMs boot; held messages are re-checked and acked once each VM has its config
        if not agent.held:
            break
        now[0] += 6
        agent.run_once()
    assert agent.held == {}

    members = compute_fake.members(MIG)
    assert sorted(members) == sorted(names.values())
    for job, name in names.items():
        vm = members[name]
        assert vm.preserved["garo-job"] == str(job) and vm.preserved["garo-repo"] == REPO
        assert "garo-jit-config" not in vm.metadata, "the JIT config never reaches Compute's metadata"
        assert "garo-jit-config" not in vm.preserved, "the JIT config is not in the MIG's per-instance config"
    assert compute_fake.calls["regionInstanceGroupManagers.createInstances"] == 1  # one call for the batch
    assert compute_fake.calls["instances.get"] == compute_fake.calls["instances.setMetadata"] == 0

    # Each VM boots and pulls its config from the agent's endpoint with its identity token, once.
    gce = agent.executor.backend
    assert isinstance(gce, GcpBackend)
    issuer = IdentityIssuer()
    with issuer.serve() as certs_url:
        verifier = IdentityVerifier(
            "http://agent.test:8780", compute_fake.project, compute_fake.region, certs_url=certs_url
        )
        endpoint = jit_app(gce.jit_vault, verifier).test_client()
        for name in names.values():
            vm = members[name]
            token = issuer.token("http://agent.test:8780", name, project=compute_fake.project, zone=vm.zone)
            first = endpoint.post(PATH, headers={"Authorization": f"Bearer {token}"})
            assert first.status_code == 200 and first.get_data(as_text=True), "the VM got its JIT config"
            again = issuer.token("http://agent.test:8780", name, project=compute_fake.project, zone=vm.zone)
            assert endpoint.post(PATH, headers={"Authorization": f"Bearer {again}"}).status_code == 410

    for runner_id, job in enumerate(JOBS, start=1):
        publish(publisher, "in_progress", job, runner=names[job], runner_id=runner_id)
    agent.run_once()
    for name in names.values():
        vm = compute_fake.instance(MIG, name)
        assert vm is not None and "garo-jit-config" not in vm.metadata, "the spent JIT config was removed"
        assert vm.metadata["garo-job"] in {str(j) for j in JOBS}

    for runner_id, job in enumerate(JOBS, start=1):
        publish(publisher, "completed", job, runner=names[job], runner_id=runner_id)
    agent.run_once()
    compute_fake.settle()
    assert compute_fake.members(MIG) == {}

    # Later passes neither recreate nor touch anything: the jobs are over.
    for _ in range(2):
        now[0] += 70
        agent.step()
    compute_fake.settle()
    assert compute_fake.members(MIG) == {}
    assert sorted(names_in(compute_fake, "createInstances")) == sorted(names.values())
    assert sorted(names_in(compute_fake, "deleteInstances")) == sorted(names.values())
    assert compute_fake.resize_calls == []
    assert compute_fake.calls["regionInstanceGroupManagers.resize"] == 0

    # Nothing was refused: every request conformed to GitHub's OpenAPI and to compute.v1.json.
    github_statuses, compute_statuses = rig["github"], rig["compute"]
    assert isinstance(github_statuses, Statuses) and isinstance(compute_statuses, Statuses)
    assert github_statuses.rejected == [] and compute_statuses.rejected == []
    assert any(path.endswith("/generate-jitconfig") and status == 201 for status, path in github_statuses.seen)

    # Every message was acknowledged: even after every lease could have expired, nothing comes back.
    bus = rig["bus"]
    assert isinstance(bus, SqliteBus)
    now[0] += 3600  # past any lease
    assert bus.pull(100, 0) == []
