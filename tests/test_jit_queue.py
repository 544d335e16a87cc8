"""A VM that asks before its config is there learns when to come back: its place in the JIT queue.

The agent publishes when it expects each awaited config (GitHub's JIT budget
decides, :meth:`JitBudget.etas`); the endpoint answers an early ask with a
404 whose Retry-After says that (bounded), or, for a config due within
LONG_POLL, waits for it. Real agent, real GcpBackend on the Compute fake, the
real endpoint and verifier with tokens signed like Google's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import pytest
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.agent.jit_endpoint import PATH, RETRY_AFTER, RETRY_MAX, jit_app
from scaler.backends import jit_vault
from scaler.backends.jit_vault import IdentityVerifier, JitVault
from scaler.github.apps import PooledJitBudget, RunnerApps, RunnerAppSlot
from scaler.github.models import JitConfig
from scaler.github.ratelimit import JitBudget
from scaler.github.sim import GitHubSim
from tests.agent.gcpkit import DEPARTMENT, GROUP, MIG, backend, gcp_config
from tests.agent.membus import MemoryBus
from tests.harness.compute import ComputeFake
from tests.harness.gce_identity import PROJECT, IdentityIssuer
from tests.harness.github import FakeClock

AUDIENCE = "http://10.10.0.5:8780"
REGION = "europe-west4"
VM = "garo-eng-linux-9001"
CONFIG = "eyJqaXQiOiAic2VjcmV0In0-" + "c" * 1500


def ask(
    client: FlaskClient, issuer: IdentityIssuer, name: str, project: str = PROJECT, issued_at: float | None = None
) -> tuple[int, str, str | None]:
    """One ask of the endpoint with a fresh token for VM ``name``: (status, body, Retry-After)."""
    token = issuer.token(AUDIENCE, name, project=project, issued_at=issued_at)
    response = client.post(PATH, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_data(as_text=True), response.headers.get("Retry-After")


# ---------------------------------------------------------------- the budget's schedule


def test_the_budget_says_when_each_of_the_next_posts_fits() -> None:
    clock = FakeClock()
    budget = JitBudget(per_minute=3, clock=clock, window=60)
    budget.try_acquire()  # spent at 0 s
    clock.advance(10)
    budget.try_acquire()  # spent at 10 s
    clock.advance(10)  # now 20 s: one token free, the others back at 60 s and 70 s
    assert budget.etas(6) == [0.0, 40.0, 50.0, 60.0, 100.0, 110.0]
    assert budget.remaining() == 1  # looking spends nothing


def test_a_pool_of_apps_sends_each_config_on_the_app_free_first() -> None:
    clock = FakeClock()
    a, b = JitBudget(per_minute=2, clock=clock, window=60), JitBudget(per_minute=1, clock=clock, window=60)
    a.try_acquire()
    clock.advance(30)
    b.try_acquire()
    pool = RunnerApps([RunnerAppSlot("app-a", GitHubSim(time.time, lambda *_: None), a), RunnerAppSlot("app-b", GitHubSim(time.time, lambda *_: None), b)])  # fmt: skip
    assert isinstance(pool.jit_budget, PooledJitBudget)
    # a: one free now, one back in 30 s; b: back in 60 s; then a again a window later.
    assert pool.jit_budget.etas(5) == [0.0, 30.0, 60.0, 60.0, 90.0]


# ---------------------------------------------------------------- the endpoint's answers


@pytest.fixture
def vault() -> JitVault:
    return JitVault()


@pytest.fixture
def client(vault: JitVault, certs_url: str) -> FlaskClient:
    return jit_app(vault, IdentityVerifier(AUDIENCE, PROJECT, REGION, certs_url=certs_url)).test_client()


def test_an_early_ask_is_told_when_its_config_is_expected_within_bounds(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    now = vault.clock()
    vault.expect({f"{VM}-soon": now + 5 * 60, f"{VM}-later": now + 20.5, f"{VM}-far": now + 400})
    vault.hold("linux", "garo-eng-linux-other", CONFIG, ttl=600)
    assert ask(client, issuer, f"{VM}-later") == (404, "no config held for this VM yet", "21")
    assert ask(client, issuer, f"{VM}-far")[2] == str(RETRY_MAX)  # asks again before then, not every few seconds
    assert ask(client, issuer, f"{VM}-unknown")[2] == str(RETRY_AFTER)  # not awaited by the agent: the flat wait
    assert vault.peek("garo-eng-linux-other") == CONFIG  # nobody else's config moved


def test_an_ask_for_a_config_due_soon_waits_for_it_and_gets_it(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer
) -> None:
    vault.expect({VM: vault.clock() + 1})
    answers: list[tuple[int, str, str | None]] = []
    asking = threading.Thread(target=lambda: answers.append(ask(client, issuer, VM)))
    asking.start()
    deadline = time.monotonic() + 10
    while vault.waiting() == 0:  # the ask is waiting at the endpoint, not answered 404
        assert asking.is_alive() and time.monotonic() < deadline, answers
        time.sleep(0.01)
    vault.hold("linux", VM, CONFIG, ttl=600)
    asking.join(10)
    assert answers == [(200, CONFIG, None)]
    assert vault.waiting() == 0 and vault.peek(VM) is None
    assert ask(client, issuer, VM, issued_at=time.time() + 1)[0] == 410  # taken once


def test_past_the_cap_on_waiting_asks_an_early_ask_is_answered_at_once(
    client: FlaskClient, vault: JitVault, issuer: IdentityIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jit_vault, "MAX_WAITERS", 0)
    vault.expect({VM: vault.clock() + 1})
    assert ask(client, issuer, VM) == (404, "no config held for this VM yet", str(RETRY_AFTER))
    assert vault.waiting() == 0


# ---------------------------------------------------------------- the agent publishes its queue


class BudgetedSim(GitHubSim):
    """The GitHub simulator spending a JIT budget per config, as the real client does."""

    def __init__(self, budget: JitBudget) -> None:
        super().__init__(time.time, lambda *_: None, random.Random(0))
        self.budget = budget

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        assert self.budget.try_acquire() == 0.0, "the agent posted past its budget"
        return super().generate_jit_config(name, runner_group_id, labels)


def test_the_agent_tells_waiting_vms_their_place_in_the_jit_queue(
    compute_fake: ComputeFake, issuer: IdentityIssuer, certs_url: str
) -> None:
    compute_fake.add_group(MIG)
    now = [1_700_000_000.0]
    clock = FakeClock()
    budget = JitBudget(per_minute=2, clock=clock, window=20)
    gce = backend(compute_fake, jit_vault=JitVault(lambda: now[0]))
    bus = MemoryBus(lambda: now[0])
    agent = Agent(
        gcp_config(max_vms=10), gce, BudgetedSim(budget), bus, clock=lambda: now[0], registry=CollectorRegistry(),
        pull_timeout=0, jit_budget=budget,
    )  # fmt: skip
    jobs = range(7001, 7006)
    for job in jobs:
        payload = {"workflow_job": {"id": job, "labels": ["self-hosted"]}, "repository": {"full_name": "octo-org/a"}}
        bus.publish_event(DEPARTMENT, GROUP, "queued", payload)
    for _ in range(5):  # create the VMs, then configs for the first two (the budget's two)
        now[0] += 2
        agent.run_once()
    names = [naming.instance_name(DEPARTMENT, GROUP, job) for job in jobs]
    assert [gce.jit_vault.holds(n) for n in names] == [True, True, False, False, False]
    assert list(agent.book.pending_jit) == names[2:]

    verifier = IdentityVerifier(AUDIENCE, compute_fake.project, compute_fake.region, certs_url=certs_url)
    client = jit_app(gce.jit_vault, verifier).test_client()
    answers = [ask(client, issuer, n, project=compute_fake.project) for n in names[2:]]
    # Both spent tokens come back 20 s after they were spent (the budget's clock stood still): the first two
    # VMs in line are told 20 s; the third needs a token spent then, a window later (40 s, told the most: 30 s).
    assert [(status, retry) for status, _, retry in answers] == [(404, "20"), (404, "20"), (404, str(RETRY_MAX))]
