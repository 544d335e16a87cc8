"""Several runner Apps: a burst spread over them, and no App ever sent more than its own limit.

The GitHub side is the simulator over real HTTP (:mod:`tests.harness.github_sim_http`),
which records every JIT POST with the credential that made it and keeps an hourly
core limit per credential, reported in ``x-ratelimit-*`` headers and ``GET
/rate_limit`` as GitHub does. The agent is the real :class:`Agent` with three real
:class:`GitHubClient`\\ s behind :class:`RunnerApps`; the cloud is the in-memory
local backend. Time is a fake clock: the budgets are minute windows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from scaler.agent import Agent
from scaler.backends.local import LocalBackend
from scaler.github.apps import RunnerApps, RunnerAppSlot
from scaler.github.client import GitHubClient
from scaler.github.sim import GitHubSim
from tests.agent.gcpkit import DEPARTMENT, GROUP, gcp_config
from tests.agent.membus import MemoryBus
from tests.harness.github import FakeClock
from tests.harness.github_sim_http import GitHubSimServer

PER_MINUTE = 180
JOBS = 1000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[GitHubSimServer]:
    sim = GitHubSim(clock.time, lambda action, payload: None, random.Random(0))
    served = GitHubSimServer(sim, clock=clock.time)
    yield served
    served.close()


def apps(server: GitHubSimServer, clock: FakeClock, count: int = 3) -> RunnerApps:
    clients = [
        GitHubClient(
            "octo-org", token=f"app-{i}", api_url=server.url, clock=clock, jit_per_minute=PER_MINUTE, runner_groups=(1,)
        )
        for i in range(count)
    ]
    return RunnerApps([RunnerAppSlot(f"app-{i}", c, c.jit_budget, c.hourly_remaining) for i, c in enumerate(clients)])


def burst(github: RunnerApps, clock: FakeClock, step: float = 5.0, limit: float = 900.0) -> float:
    """Queue JOBS jobs at once and run the agent until every VM has its config; the fake seconds it took."""
    backend = LocalBackend(None, boot_delay=0, clock=clock.time)
    bus = MemoryBus(clock.time)
    agent = Agent(
        gcp_config(max_vms=JOBS), backend, github, bus, clock=clock.time, registry=CollectorRegistry(),
        pull_timeout=0, jit_per_iteration=JOBS,
    )  # fmt: skip
    for job_id in range(1, JOBS + 1):
        payload = {"workflow_job": {"id": 9_000_000 + job_id, "labels": ["self-hosted"]}}
        payload["repository"] = {"full_name": "octo-org/app"}
        bus.publish_event(DEPARTMENT, GROUP, "queued", payload)
    start = clock.time()
    agent.run_once()
    while agent.book.pending_jit and clock.time() - start < limit:
        clock.advance(step)
        agent.run_once()
    assert not agent.book.pending_jit, f"{len(agent.book.pending_jit)} VMs still wait for a config"
    return clock.time() - start


def most_in_a_minute(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times if s <= t < s + 60) for s in times), default=0)


def test_three_apps_deliver_a_burst_and_none_is_sent_more_than_its_limit(
    server: GitHubSimServer, clock: FakeClock
) -> None:
    pool = apps(server, clock)
    took = burst(pool, clock)
    per_app: dict[str, list[float]] = {}
    for credential, at in server.jit_posts:
        per_app.setdefault(credential, []).append(at)
    assert sum(len(v) for v in per_app.values()) == JOBS
    assert sorted(per_app) == ["app-0", "app-1", "app-2"]
    for credential, times in per_app.items():
        assert most_in_a_minute(times) <= PER_MINUTE, credential
    # One App needs five minutes of budget for 1,000 configs; three share the load.
    assert took <= 120
    assert server.calls.get("jit 429", 0) == 0 and server.calls.get("jit 403", 0) == 0


def test_an_app_near_its_hourly_limit_gets_no_configs(server: GitHubSimServer, clock: FakeClock) -> None:
    server.used["app-0"] = (clock.time(), server.hourly_limit - 150)  # 150 left: under the pool's reserve
    pool = apps(server, clock)
    burst(pool, clock)
    sent = {credential for credential, _ in server.jit_posts}
    assert sent == {"app-1", "app-2"}
    assert pool.jit_counts["app-0"] == 0


def test_runners_are_listed_per_runner_group_not_per_organisation(server: GitHubSimServer, clock: FakeClock) -> None:
    for i in range(250):  # other departments' runners, in other groups
        server.sim.generate_jit_config(f"other-{i}", 7, ["self-hosted"])
    for i in range(30):
        server.sim.generate_jit_config(f"garo-eng-linux-{i}", 1, ["self-hosted"])
    scoped = GitHubClient("octo-org", token="t", api_url=server.url, clock=clock, runner_groups=(1,))
    whole = GitHubClient("octo-org", token="t", api_url=server.url, clock=clock)
    assert {r.name for r in scoped.list_runners()} == {f"garo-eng-linux-{i}" for i in range(30)}
    assert server.calls["group-list 200"] == 1
    assert len(whole.list_runners()) == 280
    assert server.calls["list 200"] == 3
