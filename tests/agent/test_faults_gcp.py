"""The agent under real faults from the real stand-ins: it keeps going and converges.

Compute faults come from the Compute fake's knobs (injected 429/503, latency
beyond the client's timeout, ``ZONE_RESOURCE_POOL_EXHAUSTED`` on the
operation); GitHub faults from a scripted HTTP server (Prism cannot fail on
demand); redelivery from the SQLite bus's own lease expiry. In every case each
job ends with exactly one VM that has its JIT config, and no queued message is
acknowledged before its VM exists.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.backends.gcp import GcpBackend
from scaler.backends.jit_vault import Identity, Refused
from scaler.bus.sqlite import SqliteBus
from scaler.github.client import GitHubClient
from tests.agent.gcpkit import DEPARTMENT, GROUP, MIG, Statuses, backend, gcp_config, jit_reply, job_reply, publish
from tests.agent.test_integration_gcp import names_in
from tests.harness.compute import ComputeFake
from tests.harness.github import FakeClock, Recorded, Reply, ScriptedGitHub

RUNNERS = r"/orgs/octo-org/actions/runners"
JIT = RUNNERS + r"/generate-jitconfig"
JOBS = (7001, 7002)
NAMES = {job: naming.instance_name(DEPARTMENT, GROUP, job) for job in JOBS}


def script(github: ScriptedGitHub, *, jit: tuple[Reply, ...] = (), runners: tuple[Reply, ...] = ()) -> None:
    """GitHub as the agent needs it, with the given faults answered first."""
    ids = itertools.count(1)

    def registered(rec: Recorded) -> Reply:
        return Reply(201, jit_reply(rec.body["name"], next(ids)))

    github.script("POST", JIT, *jit, registered)
    github.script("GET", RUNNERS, *runners, Reply(200, {"total_count": 0, "runners": []}))
    github.script("DELETE", RUNNERS + r"/\d+", Reply(204))
    github.script("GET", r"/repos/octo-org/app/actions/jobs/(\d+)", lambda rec: Reply(200, job_reply(1, "queued")))


@dataclass
class Rig:
    fake: ComputeFake
    github: ScriptedGitHub
    tmp: Path
    clock: FakeClock = field(default_factory=FakeClock)
    statuses: Statuses = field(default_factory=Statuses)
    backends: list[GcpBackend] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fake.add_group(MIG)
        self.bus_path = self.tmp / "bus.db"
        self.publisher = SqliteBus(self.bus_path)

    def subscriber(self, ack_deadline: float = 60.0) -> SqliteBus:
        return SqliteBus(
            self.bus_path,
            subscription=f"agent-{DEPARTMENT}",
            filter={"department": DEPARTMENT},
            clock=self.clock.time,
            ack_deadline=ack_deadline,
        )

    def agent(self, session: requests.Session | None = None, ack_deadline: float = 60.0, **options: Any) -> Agent:
        github = GitHubClient(
            "octo-org", token="dev", api_url=self.github.url, clock=self.clock, registry=CollectorRegistry()
        )
        options.setdefault("wall_clock", self.clock.time)  # VMs' birth times on the agent's clock
        gce = backend(self.fake, self.statuses.attach(session or requests.Session()), **options)
        self.backends.append(gce)
        return Agent(
            gcp_config(),
            gce,
            github,
            self.subscriber(ack_deadline),
            clock=self.clock.time,
            registry=CollectorRegistry(),
            pull_timeout=0,
        )

    def held_config(self, name: str) -> str | None:
        """The config an agent holds for VM ``name`` (what the VM would pull); never in Compute's metadata."""
        vm = self.fake.instance(MIG, name)
        assert vm is None or "garo-jit-config" not in vm.metadata, "a JIT config reached Compute"
        return next((c for b in self.backends if (c := b.jit_vault.peek(name))), None)

    def queue(self) -> None:
        for job in JOBS:
            publish(self.publisher, "queued", job)

    def rounds(self, agent: Agent, count: int) -> None:
        for _ in range(count):
            self.clock.advance(6)
            agent.step()

    def ask_for_configs(self) -> None:
        """Each VM without a config asks the agents for one, as its boot agent does until it has one."""
        for name, vm in self.fake.members(MIG).items():
            if self.held_config(name) is not None:
                continue  # it would take it: leave it for the assertions
            now = self.clock.time()
            who = Identity(name, str(vm.id), vm.zone, now, now - 60, now + 600)
            for gce in self.backends:
                with contextlib.suppress(Refused):
                    gce.jit_vault.take(who)

    def converge(self, agent: Agent, limit: int = 15) -> None:
        for _ in range(limit):
            self.clock.advance(6)
            self.ask_for_configs()
            agent.step()
            self.fake.settle()
            if not agent.held and all(self.held_config(n) for n in self.fake.members(MIG)):
                return  # a VM whose maker did not know it made it (a create that timed out) asked
        raise AssertionError(f"still holding {len(agent.held)} messages, or a VM waits for its config")

    def assert_one_vm_per_job(self) -> None:
        members = self.fake.members(MIG)
        assert sorted(members) == sorted(NAMES.values())
        assert all(self.held_config(name) for name in members), "every VM has its config waiting for it"
        assert sorted(set(names_in(self.fake, "createInstances"))) == sorted(NAMES.values())
        assert self.fake.resize_calls == []
        # every message acknowledged: past any lease, nothing comes back
        self.clock.advance(3600)
        assert self.subscriber().pull(100, 0) == []


@pytest.fixture
def rig(compute_fake: ComputeFake, scripted_github: ScriptedGitHub, tmp_path: Path) -> Iterator[Rig]:
    yield Rig(compute_fake, scripted_github, tmp_path)


def test_compute_429_and_503_beyond_the_clients_retries_are_retried_by_the_agent(rig: Rig) -> None:
    script(rig.github)
    agent = rig.agent(retries=1)
    rig.fake.fail_next(429, 3, "regionInstanceGroupManagers.createInstances")
    # Compute failing on setMetadata cannot touch delivery any more: configs are held, not written.
    rig.fake.fail_next(503, 2 * len(JOBS), "instances.setMetadata")
    rig.queue()
    rig.rounds(agent, 1)
    assert rig.fake.members(MIG) == {} and len(agent.held) == 2  # create failed twice: nothing acked
    rig.converge(agent)
    rig.assert_one_vm_per_job()
    # One config per VM, none revoked: delivery no longer depends on a Compute write.
    assert len(rig.github.calls("POST", JIT)) == len(JOBS)
    assert rig.github.calls("DELETE", RUNNERS + r"/\d+") == []
    assert rig.fake.calls["instances.setMetadata"] == 0
    assert not [r for r in rig.statuses.rejected if r[0] not in (429, 503)]


class SlowCreates(requests.Session):
    """Makes the fake answer the first ``count`` createInstances slower than the client waits."""

    def __init__(self, fake: ComputeFake, latency: float, count: int) -> None:
        super().__init__()
        self.fake, self.latency, self.left = fake, latency, count

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        slow = str(url).endswith("/createInstances") and self.left > 0
        self.left -= slow
        self.fake.latency = self.latency if slow else 0.0
        return super().request(method, url, *args, **kwargs)


def test_compute_timeouts_on_create_do_not_duplicate_vms(rig: Rig) -> None:
    """The timed-out creates still land (as they may on GCP): names, not counts, keep it one VM per job."""
    script(rig.github)
    agent = rig.agent(SlowCreates(rig.fake, 0.5, 2), retries=1, timeout=0.2)
    rig.queue()
    rig.rounds(agent, 1)
    assert len(agent.held) == 2  # the create timed out: held, not acked
    deadline = time.monotonic() + 10
    while rig.fake.calls["regionInstanceGroupManagers.createInstances"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the abandoned requests reach the fake late, and are applied there
    rig.converge(agent)
    rig.assert_one_vm_per_job()
    assert rig.fake.calls["regionInstanceGroupManagers.createInstances"] == 2  # both timed-out tries, no more


def test_zone_exhausted_on_the_operation_holds_jobs_until_capacity_returns(rig: Rig) -> None:
    script(rig.github)
    agent = rig.agent()
    rig.fake.exhaust(code="ZONE_RESOURCE_POOL_EXHAUSTED")
    rig.queue()
    rig.rounds(agent, 3)
    rig.fake.settle()
    assert rig.fake.members(MIG) == {}, "stuck creations are deleted so the MIG stops retrying them"
    assert len(agent.held) == 2 and rig.github.calls("POST", JIT) == []
    rig.fake.restore()
    rig.converge(agent)
    rig.assert_one_vm_per_job()


def test_github_5xx_and_secondary_rate_limit_slow_jit_delivery_but_lose_nothing(rig: Rig) -> None:
    limited = Reply(
        403,
        {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."},
        {"retry-after": "60"},
    )
    script(rig.github, jit=(*[Reply(502)] * 5, limited), runners=(Reply(503), Reply(500)))
    agent = rig.agent()
    rig.queue()
    rig.rounds(agent, 1)
    assert len(agent.held) == 2  # five 502s: the client gave up, the agent holds the messages
    rig.converge(agent)
    rig.assert_one_vm_per_job()
    assert 60.0 in rig.clock.sleeps, "the client waited as GitHub's Retry-After asked"
    assert len(rig.github.calls("POST", JIT)) == 5 + 1 + len(JOBS)


def test_a_lease_that_expires_redelivers_to_a_fresh_agent_which_reuses_the_vm(rig: Rig) -> None:
    """Agent A creates the VMs and dies before acking; B gets the messages again after the lease."""
    script(rig.github, jit=(Reply(502),) * 10)  # A never gets a JIT config (the client tries 5 times per call)
    first = rig.agent(ack_deadline=30)
    rig.queue()
    first.step()
    rig.fake.settle()
    assert sorted(rig.fake.members(MIG)) == sorted(NAMES.values()) and len(first.held) == 2
    del first  # killed: its held leases are never extended again
    rig.clock.advance(31)
    second = rig.agent(ack_deadline=30)
    rig.converge(second)
    rig.assert_one_vm_per_job()
    assert rig.fake.calls["regionInstanceGroupManagers.createInstances"] == 1, "B reused A's VMs"


def test_after_a_restart_a_never_registered_vm_is_replaced_only_if_its_job_still_waits(rig: Rig) -> None:
    """Agent B knows nothing of A's VMs but what Compute lists: the job and repo each VM was made for."""
    script(rig.github)
    waiting, finished = JOBS
    rig.github.script(
        "GET",
        r"/repos/octo-org/app/actions/jobs/\d+",
        lambda rec: Reply(
            200, job_reply(int(rec.path.rsplit("/", 1)[-1]), "queued" if str(waiting) in rec.path else "completed")
        ),
    )
    rig.github._routes.insert(0, rig.github._routes.pop())  # ahead of script()'s default job route
    first = rig.agent()
    rig.queue()
    rig.converge(first)
    assert sorted(rig.fake.members(MIG)) == sorted(NAMES.values())
    del first  # killed; the runners never registered (GitHub lists none)
    first_ids = {name: vm.id for name, vm in rig.fake.members(MIG).items()}

    rig.clock.advance(gcp_config().group(GROUP).time_to_start + 60)
    second = rig.agent()
    for _ in range(4):  # a deletion needs two sightings; then the waiting job gets a new VM
        second.reconcile()
        rig.fake.settle()
        rig.clock.advance(10)
    asked = {r.path.split("?")[0] for r in rig.github.calls("GET", r"/repos/octo-org/app/actions/jobs/\d+")}
    assert asked == {f"/repos/octo-org/app/actions/jobs/{job}" for job in JOBS}
    members = rig.fake.members(MIG)
    made_for = sorted(vm.preserved["garo-job"] for vm in members.values())
    assert made_for == [str(waiting)], "the waiting job has one (new) VM; the finished job's VM is gone"
    replaced = next(iter(members.values()))
    assert rig.held_config(replaced.name), "the replacement has its config waiting for it"
    deleted, created = names_in(rig.fake, "deleteInstances"), names_in(rig.fake, "createInstances")
    assert deleted.count(NAMES[finished]) == 1 and deleted.count(NAMES[waiting]) == 1
    assert replaced.id != first_ids[NAMES[waiting]] and len(created) == len(JOBS) + 1
    assert rig.fake.resize_calls == []
