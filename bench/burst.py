"""Burst: 1,000 queued jobs within 10 s for one group, through the real agent and GcpBackend.

Compute is the discovery-validated fake over real HTTP with a per-call latency
(default 150 ms) and operations that take ~2 s to finish (``operations.wait``
answers after that long); GitHub is the in-package simulator with a per-call
latency, behind the real :class:`JitBudget` at 180 JIT configs a minute, in real
time: the agent checks the budget rather than blocking on it, so a run for
1,000 jobs lasts at least the ~5.5 minutes the budget needs.

    .venv/bin/python bench/burst.py [--jobs 1000] [--max 500] [--latency 0.15] [--op-seconds 2]
        [--github-latency 0.1] [--spread 10] [--apps 1] [--run SECONDS] [--write-docs]
    .venv/bin/python bench/burst.py --cloud aws [--list-ttl 5] ...   (AwsBackend on moto: bench/burst_aws.py)

With ``--run SECONDS`` each job lives a whole life (:class:`RunningJobs`): GitHub hands
it to the runner that boots with a pulled config, it runs that long and completes, and
the agent gets its ``in_progress`` and ``completed`` events, deletes its VM and runs its
reconcile passes when due (``Agent.step``), so calls per job count deletion and agent
CPU counts all three events of each job and the reconciles.

With ``--apps N`` the agent has N runner Apps (each with its own 180/min budget) behind
:class:`scaler.github.apps.RunnerApps`. Agent CPU is the CPU time of the agent's own
threads (``time.thread_time`` around ``run_once`` and around each metadata write in the
writer threads), not of the Compute fake serving it. The runner-listing figures come from
a separate measurement: a real :class:`GitHubClient` against the simulator over HTTP with
10,000 runners in the organisation, 100 of them in the department's runner group.

The simulated VMs pull their JIT configs as real ones do (docs/security.md, "JIT delivery"):
:class:`PullingVms` mints each booted VM an identity token (tests/harness/gce_identity.py,
a test key served like Google's certs) and POSTs it to the agent's real JIT endpoint
over HTTP; the endpoint's Flask app (token checks included) runs in its own threads and counts
as agent CPU (werkzeug's HTTP parsing in front of it does not).

With --write-docs it adds a dated entry to docs/benchmarks.md (bench/docs.py):
every figure in it comes from this run or its arguments.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import random
import shlex
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.docs import DOCS, add_entry, heading  # noqa: E402
from scaler.agent import Agent  # noqa: E402
from scaler.agent.executor import METADATA_WRITERS  # noqa: E402
from scaler.agent.jit_endpoint import PATH, CallerRate, jit_app, serve  # noqa: E402
from scaler.backends.gcp import GcpBackend, GcpGroup  # noqa: E402
from scaler.backends.jit_vault import IdentityVerifier, JitVault  # noqa: E402
from scaler.github.apps import RunnerApps, RunnerAppSlot  # noqa: E402
from scaler.github.client import GitHubClient  # noqa: E402
from scaler.github.models import GitHubApi, JitConfig, Job, Runner  # noqa: E402
from scaler.github.ratelimit import JitBudget  # noqa: E402
from scaler.github.sim import GitHubSim  # noqa: E402
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS, MIG, REPO, gcp_config  # noqa: E402
from tests.agent.membus import MemoryBus  # noqa: E402
from tests.harness.compute import ComputeFake, _QuietHandler  # noqa: E402
from tests.harness.gce_identity import IdentityIssuer  # noqa: E402
from tests.harness.github_sim_http import GitHubSimServer  # noqa: E402

logging.getLogger("garo.agent").setLevel(logging.ERROR)


class SlowCompute(ComputeFake):
    """Every call takes ``latency``; waiting on an operation takes ``op_seconds`` (it then is DONE)."""

    op_seconds = 2.0
    started = 0.0
    created: list[tuple[float, int]] = []  # (seconds since start, names asked for) per createInstances

    def handle(self, http_method: str, path: str, query: dict[str, list[str]], raw: bytes) -> tuple[int, Any]:
        if path.endswith("/wait"):
            time.sleep(max(self.op_seconds - self.latency, 0.0))
        status, body = super().handle(http_method, path, query, raw)
        if path.endswith("/createInstances") and status == 200:
            self.created.append((time.monotonic() - self.started, raw.count(b'"name"')))
        return status, body


class BudgetedGitHub:
    """The simulator with network latency and the real JIT budget (180 a minute, real time)."""

    def __init__(
        self,
        latency: float,
        per_minute: int = 180,
        sim: GitHubSim | None = None,
        calls: dict[str, int] | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        self.sim = sim or GitHubSim(time.time, lambda action, payload: None, random.Random(0))
        self.lock = lock or threading.Lock()  # the simulator is one world: one caller at a time
        self.latency = latency
        self.budget = JitBudget(per_minute)
        self.jit_budget = self.budget
        self.calls: dict[str, int] = {} if calls is None else calls
        self.last_jit_at = 0.0  # monotonic time of this App's last JIT config

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        time.sleep(self.latency)

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        self.budget.acquire()
        self._call("generate_jit_config")
        with self.lock:
            jit = self.sim.generate_jit_config(name, runner_group_id, labels)
        self.last_jit_at = time.monotonic()
        return jit

    def list_runners(self) -> Sequence[Runner]:
        self._call("list_runners")
        with self.lock:
            return self.sim.list_runners()

    def delete_runner(self, runner_id: int) -> None:
        self._call("delete_runner")
        with self.lock:
            self.sim.delete_runner(runner_id)

    def get_job(self, repo_full_name: str, job_id: int) -> Job:
        self._call("get_job")
        with self.lock:
            return self.sim.get_job(repo_full_name, job_id)


IDLE_WAIT = 0.5  # seconds a pass that changed nothing waits, as the agent's bus pull would


class AgentCpu:
    """CPU seconds of the agent's own threads: the loop's, plus each metadata write in the writer threads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.lock = threading.Lock()
        self.main = threading.get_ident()

    def around(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == self.main:
                return call(*args, **kwargs)  # already inside the loop's measured run_once
            begun = time.thread_time()
            try:
                return call(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds += time.thread_time() - begun

        return timed

    def run(self, call: Callable[[], Any]) -> None:
        begun = time.thread_time()
        call()
        self.seconds += time.thread_time() - begun


class PullingVms:
    """Booted VMs of the fake that ask the agent's JIT endpoint for their configs, as the boot agent does.

    A background thread goes over the MIG's running members every ``tick``
    seconds; each VM without its config yet POSTs its identity token, minted
    once and reused as the boot agent does, when its last answer's
    Retry-After has passed (404: not held yet; the agent says when it expects
    the config). A VM asks first as soon as it is seen running; ``interval``
    is the wait after an answer without a Retry-After. Nothing here calls Compute.
    """

    def __init__(
        self, fake: ComputeFake, issuer: IdentityIssuer, url: str, interval: float = 3.0, tick: float = 0.25
    ) -> None:
        self.fake, self.issuer, self.url, self.interval, self.tick = fake, issuer, url, interval, tick
        self.concurrency = 512
        self.tokens: dict[str, str] = {}
        self.next_ask: dict[str, float] = {}
        self.pulled: set[str] = set()
        self.pulled_at: dict[str, float] = {}  # monotonic time of each VM's 200
        self.configs: list[str] = []  # configs pulled and not yet started by a runner (RunningJobs.boot)
        self.answers: dict[int, int] = {}
        self.stop = threading.Event()
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency))
        self.thread = threading.Thread(target=self._run, name="bench-vms", daemon=True)

    def take_configs(self) -> list[str]:
        """The configs pulled since the last call (the runners that start now)."""
        taken, self.configs = self.configs, []
        return taken

    def _run(self) -> None:
        asking: set[str] = set()
        lock = threading.Lock()

        def ask(name: str, token: str) -> None:
            try:
                response = self.session.post(self.url + PATH, headers={"Authorization": f"Bearer {token}"}, timeout=30)
            except requests.RequestException:
                response = None
            with lock:
                asking.discard(name)
                status = response.status_code if response is not None else 0
                self.answers[status] = self.answers.get(status, 0) + 1
                if status in (200, 410):
                    self.pulled.add(name)
                    self.pulled_at[name] = time.monotonic()
                    if status == 200 and response is not None:
                        self.configs.append(response.text)
                    return
                retry = response.headers.get("Retry-After", "") if response is not None else ""
                self.next_ask[name] = time.monotonic() + (float(retry) if retry.isdigit() else self.interval)

        # Each VM asks on its own (an ask may wait for its config at the endpoint): one thread per VM at most.
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="bench-vm") as pool:
            while not self.stop.wait(self.tick):
                for name, vm in list(self.fake.members(MIG).items()):
                    now = time.monotonic()
                    with lock:
                        if name in self.pulled or name in asking or vm.status != "RUNNING":
                            continue
                        if now < self.next_ask.setdefault(name, now):
                            continue
                        asking.add(name)
                    token = self.tokens.get(name) or self.issuer.token(
                        self.url, name, project=self.fake.project, zone=vm.zone
                    )
                    self.tokens[name] = token
                    pool.submit(ask, name, token)


class RunningJobs:
    """GitHub's side of a whole job life: queue each job, hand it to a runner that boots, end it ``run_s`` later.

    Every event the simulator emits (``queued``, ``in_progress`` with the
    runner's name, ``completed``) reaches the agent's bus as the webhook would
    publish it, so the agent sees all three events of each job and deletes
    each VM when its job completes. Runs in the bench's loop thread; the
    simulator's lock keeps the agent's GitHub calls (executor threads) out
    meanwhile. Nothing here calls Compute.
    """

    def __init__(self, github: BudgetedGitHub, bus: MemoryBus, run_s: float) -> None:
        self.github, self.bus, self.run_s = github, bus, run_s
        github.sim.emit = self._emit
        self.ends: list[tuple[float, int]] = []  # (monotonic end, job id), a heap
        self.queued = self.started = self.completed = 0

    def _emit(self, action: str, payload: dict[str, Any]) -> None:
        self.bus.publish_event(DEPARTMENT, GROUP, action, payload)

    def queue(self, count: int) -> None:
        with self.github.lock:
            for _ in range(count):
                self.github.sim.queue_job(REPO, LABELS)
        self.queued += count

    def boot(self, configs: Sequence[str]) -> None:
        """Runners start with the configs their VMs pulled; GitHub hands them queued jobs."""
        if not configs:
            return
        with self.github.lock:
            for config in configs:
                self.github.sim.boot(config)
            for job in self.github.sim.assign():
                heapq.heappush(self.ends, (time.monotonic() + self.run_s, job.id))
                self.started += 1

    def finish_due(self) -> None:
        now = time.monotonic()
        with self.github.lock:
            while self.ends and self.ends[0][0] <= now:
                self.github.sim.complete(heapq.heappop(self.ends)[1])
                self.completed += 1


def live_members(fake: ComputeFake) -> int:
    """The MIG's members not being deleted (the fake drops a deleted one at its next listing)."""
    return sum(1 for vm in fake.members(MIG).values() if vm.action != "DELETING")


def count_reconciles(agent: Agent) -> list[int]:
    """A one-item list that counts the agent's reconcile passes as they happen."""
    passes = [0]
    reconcile = agent.reconcile

    def counted(dry_run: bool = False) -> Any:
        passes[0] += 1
        return reconcile(dry_run)

    agent.reconcile = counted  # type: ignore[method-assign]
    return passes


def hold_times(vault: JitVault) -> dict[str, float]:
    """Record when the agent holds each config (monotonic time, by VM name): the start of its pickup."""
    held_at: dict[str, float] = {}
    hold = vault.hold

    def timed(group: str, name: str, config: str, ttl: float, requested_at: float | None = None) -> None:
        held_at[name] = time.monotonic()
        hold(group, name, config, ttl, requested_at)

    vault.hold = timed  # type: ignore[method-assign]
    return held_at


def pickup(held_at: dict[str, float], pulled_at: dict[str, float]) -> tuple[float, float, float]:
    """p50, p99 and max seconds from a config being held to its VM having it (what waiting adds to a job)."""
    waits = sorted(pulled_at[n] - held_at[n] for n in pulled_at if n in held_at)
    if not waits:
        return (0.0, 0.0, 0.0)
    return waits[len(waits) // 2], waits[min(len(waits) - 1, int(len(waits) * 0.99))], waits[-1]


def listing_cost(org_runners: int = 10_000, ours: int = 100) -> dict[str, int]:
    """GitHub requests for one runner listing, per organisation and per runner group (real client, HTTP)."""
    sim = GitHubSim(time.time, lambda action, payload: None, random.Random(0))
    for i in range(org_runners - ours):
        sim.generate_jit_config(f"other-{i}", 7, ["self-hosted"])
    for i in range(ours):
        sim.generate_jit_config(f"garo-{DEPARTMENT}-{GROUP}-{i}", 1, ["self-hosted"])
    server = GitHubSimServer(sim)
    try:
        counts = {}
        for how, groups in (("organisation", ()), ("runner group", (1,))):
            before = sum(server.calls.values())
            client = GitHubClient("octo-org", token="bench", api_url=server.url, runner_groups=groups)
            listed = len(client.list_runners())
            counts[how] = sum(server.calls.values()) - before
            counts[f"{how} runners"] = listed
        return counts
    finally:
        server.close()


def due_by_now(jobs: int, start: float, spread: float) -> int:
    """How many of ``jobs`` are queued by now, evenly over ``spread`` seconds."""
    return min(jobs, int((time.monotonic() - start) / spread * jobs) + 1) if spread > 0 else jobs


def publish_due(bus: MemoryBus, jobs: int, published: int, start: float, spread: float) -> int:
    """Publish the ``queued`` events due by now (evenly over ``spread`` seconds); the count published so far."""
    due = due_by_now(jobs, start, spread)
    for job_id in range(published + 1, due + 1):
        payload = {"workflow_job": {"id": 9_000_000 + job_id, "labels": ["self-hosted"]}}
        payload["repository"] = {"full_name": "octo-org/app"}
        bus.publish_event(DEPARTMENT, GROUP, "queued", payload)
    return due


def run(
    jobs: int,
    max_vms: int,
    latency: float,
    github_latency: float,
    op_seconds: float = 2.0,
    spread: float = 10.0,
    apps: int = 1,
    run_s: float | None = None,
) -> dict[str, Any]:
    """One burst; with ``run_s`` each job also starts on its VM, runs that long and completes (RunningJobs)."""
    fake = SlowCompute()
    fake.op_seconds = op_seconds
    fake.created = []
    server = make_server("127.0.0.1", 0, fake.wsgi, threaded=True, request_handler=_QuietHandler)
    fake.base_url = f"http://127.0.0.1:{server.server_port}/compute/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.add_group(MIG)
    fake.latency = latency
    backend = GcpBackend(
        fake.project, fake.region, {GROUP: GcpGroup(MIG)}, session=requests.Session(), base_url=fake.base_url
    )
    cpu = AgentCpu()
    backend.set_metadata = cpu.around(backend.set_metadata)  # type: ignore[method-assign]
    held_at = hold_times(backend.jit_vault)
    issuer = IdentityIssuer()
    certs = issuer.serve()
    certs_url = certs.__enter__()
    verifier = IdentityVerifier("", fake.project, fake.region, certs_url=certs_url)
    # Every simulated VM calls from 127.0.0.1: the per-caller limit would throttle the whole fleet as one.
    app = jit_app(backend.jit_vault, verifier, CallerRate(limit=10**9))
    app.wsgi_app = cpu.around(app.wsgi_app)  # type: ignore[method-assign]  # the endpoint's CPU is the agent's
    endpoint = serve(app, "127.0.0.1", 0)
    verifier.audience = f"http://127.0.0.1:{endpoint.server_port}"
    vms = PullingVms(fake, issuer, verifier.audience)
    vms.thread.start()
    first = BudgetedGitHub(github_latency)
    others = [
        BudgetedGitHub(github_latency, sim=first.sim, calls=first.calls, lock=first.lock) for _ in range(apps - 1)
    ]
    members = [first, *others]
    for member in members:  # with several Apps, JIT requests run in the executor's threads
        member.generate_jit_config = cpu.around(member.generate_jit_config)  # type: ignore[method-assign]
    pool = RunnerApps([RunnerAppSlot(f"app-{chr(97 + i)}", m, m.budget) for i, m in enumerate(members)])
    github: GitHubApi = first if apps == 1 else pool
    bus = MemoryBus(time.time)
    world = RunningJobs(first, bus, run_s) if run_s is not None else None
    agent = Agent(
        gcp_config(max_vms=max_vms), backend, github, bus, registry=CollectorRegistry(), pull_timeout=0,
        jit_budget=first.budget if apps == 1 else pool.jit_budget,
    )  # fmt: skip
    reconciles = count_reconciles(agent)
    peak = 0
    passes = 0
    start = fake.started = time.monotonic()
    requested_at = None
    published = 0
    while True:
        if world is None:
            published = publish_due(bus, jobs, published, start, spread)
        else:
            due = due_by_now(jobs, start, spread)
            world.queue(due - published)
            published = due
            world.boot(vms.take_configs())
            world.finish_due()

        def progress() -> tuple[int, ...]:
            done = (world.started, world.completed) if world is not None else ()
            return len(agent.book.pending_jit), len(fake.members(MIG)), *done

        waiting = progress()
        cpu.run(agent.run_once if world is None else agent.step)  # step: reconcile passes when due, too
        passes += 1
        if published == jobs and progress() == waiting:
            # Nothing moved (the JIT budget is spent): the real agent would now block up to
            # its pull timeout on the bus; this bench's bus answers at once, so wait here.
            time.sleep(IDLE_WAIT)
        size = len(fake.members(MIG))
        peak = max(peak, size)
        if requested_at is None and size >= min(jobs, max_vms):
            requested_at = next(t for t, _ in fake.created) if fake.created else 0.0
            total = 0
            for t, count in fake.created:
                total += count
                if total >= min(jobs, max_vms):
                    requested_at = t
                    break
        pulled_all = len(vms.pulled) >= len(fake.members(MIG))
        settled = len(agent.held) <= max(0, jobs - max_vms)  # jobs beyond max stay held, by design
        if world is not None:
            if world.completed == jobs and not live_members(fake) and not agent.held:
                break
        elif requested_at is not None and not agent.book.pending_jit and pulled_all and settled:
            break
        if time.monotonic() - start > 600:
            break
    vms.stop.set()
    vms.thread.join()
    endpoint.shutdown()
    certs.__exit__(None, None, None)
    server.shutdown()
    calls = dict(sorted(fake.calls.items()))
    wall = time.monotonic() - start
    events = jobs if world is None else world.queued + world.started + world.completed
    # Whole job lives go on after the last config (the jobs run, VMs go): their delivery ends with it.
    delivered_by = wall if world is None else max(m.last_jit_at for m in members) - start
    delivery = delivered_by - (requested_at or 0.0)
    jit_configs = first.calls.get("generate_jit_config", 0)
    per_minute = first.budget.per_minute * apps
    return {
        "jobs": jobs,
        "max": max_vms,
        "target": min(jobs, max_vms),
        "spread_s": spread,
        "cores": os.cpu_count() or 0,
        "latency_ms": latency * 1000,
        "op_s": op_seconds,
        "github_latency_ms": github_latency * 1000,
        "apps": apps,
        "jit_per_minute": per_minute,
        "per_app": dict(pool.jit_counts) if apps > 1 else {"app-a": jit_configs},
        "writers": METADATA_WRITERS,
        "compute_calls": calls,
        "compute_per_job": {m: n / max(jobs, 1) for m, n in calls.items()},
        "compute_total": sum(calls.values()),
        "compute_total_per_job": sum(calls.values()) / max(jobs, 1),
        "github_calls": dict(sorted(first.calls.items())),
        "github_per_job": {m: n / max(jobs, 1) for m, n in sorted(first.calls.items())},
        "requested_s": requested_at,
        "wall_s": wall,
        "jit_configs": jit_configs,
        # What the budget alone needs: each further batch of per_minute configs waits a minute.
        "budget_s": max(0, -(-jit_configs // per_minute) - 1) * 60,
        "delivery_s": delivery,
        "last_config_s": delivered_by,
        "per_vm_s": delivery / max(jit_configs, 1),
        "configs_per_minute": jit_configs / max(delivered_by, 1e-9) * 60,
        "agent_cpu_s": cpu.seconds,
        "events": events,
        "agent_cpu_per_thousand_s": cpu.seconds / max(events, 1) * 1000,
        "reconciles": reconciles[0],
        "run_s": run_s,
        "completed": world.completed if world is not None else 0,
        "members_left": live_members(fake),
        "passes": passes,
        "idle_wait_s": IDLE_WAIT,
        "peak": peak,
        "resize": len(fake.resize_calls),
        "held": len(agent.held),
        "pulled": len(vms.pulled),
        "pull_answers": sorted(vms.answers.items()),  # (HTTP status, count)
        "still_held": len(backend.jit_vault),
        "pickup_s": pickup(held_at, vms.pulled_at),
        "listing": listing_cost(),
    }


INTRO = """`bench/burst.py` publishes `queued` messages evenly over a few seconds for one group and runs the real agent
and GcpBackend against the Compute fake over HTTP (every request validated against compute.v1.json, each call
delayed by a set latency, operations done after a set time); GitHub is the in-package simulator with a set
latency behind the real `JitBudget`, in real time. The agent never blocks on that budget: it checks what is left
and comes back. Jobs beyond `max` and jobs waiting for a config stay held (unacked, leases extended), never
dropped. The agent holds each JIT config in memory and the simulated VMs pull it from its JIT endpoint with a
signed identity token (since 2026-11-30; before, the agent wrote it into each VM's metadata). This bench starts
no runners, so the agent re-checks (`get_job`) jobs whose VMs got configs but never ran."""


def per_minute_window(r: dict[str, Any]) -> str:
    return "over the whole run" if r["run_s"] is None else "from the first message to the last config"


def events_text(r: dict[str, Any]) -> str:
    if r["run_s"] is None:
        return f"{r['jobs']} `queued` events"
    return f"{r['events']} events (`queued`, `in_progress`, `completed`)"


def lifecycle(r: dict[str, Any]) -> str:
    """The line on whole job lives (``--run``); empty for a burst of queued jobs only."""
    if r["run_s"] is None:
        return ""
    return (
        f"- Whole job lives (`--run {r['run_s']:g}`): each job started on its VM when its runner booted with the "
        f"pulled config, ran {r['run_s']:g} s and completed; the agent saw all three events of each and deleted "
        f"each VM when its job completed. Jobs completed: **{r['completed']}**; VMs left at the end: "
        f"**{r['members_left']}**; the last JIT config came **{r['last_config_s']:.1f} s** after the first "
        "message.\n"
    )


def markdown(r: dict[str, Any], command: str, date: str | None = None) -> str:
    """One dated entry; every figure in it is a value of ``r`` (the run and its arguments)."""
    rows = "\n".join(f"| {m} | {n} | {r['compute_per_job'][m]:.3f} |" for m, n in r["compute_calls"].items())
    gh = "\n".join(f"| {k} | {v} | {r['github_per_job'][k]:.3f} |" for k, v in r["github_calls"].items())
    apps = ", ".join(f"{k} {v}" for k, v in r["per_app"].items())
    answers = ", ".join(f"{n} × HTTP {code}" for code, n in r["pull_answers"]) or "none"
    listing = r["listing"]
    requested = "never" if r["requested_s"] is None else f"**{r['requested_s']:.1f} s** after the first message"
    return f"""{heading(date or time.strftime("%Y-%m-%d"), command)}

{r["jobs"]} jobs over {r["spread_s"]:g} s, max {r["max"]}; {r["cores"]} cores; Compute {r["latency_ms"]:g} ms per \
call, operations done after {r["op_s"]:g} s; GitHub {r["github_latency_ms"]:g} ms per call, {r["apps"]} runner \
App(s), JIT budget {r["jit_per_minute"]}/min in all; the agent hands configs to up to {r["writers"]} VMs at a time \
(held in its memory for the VMs to pull).

| Compute method | calls | per job |
|---|---|---|
{rows}
| **total** | **{r["compute_total"]}** | **{r["compute_total_per_job"]:.2f}** |

| GitHub call | calls | per job |
|---|---|---|
{gh}

- JIT configs per App: {apps}.
- All capacity requested (createInstances for {r["target"]} names sent and done): {requested}; peak group \
size **{r["peak"]}**; resize calls: {r["resize"]}.
- JIT configs delivered: {r["jit_configs"]}, in {r["delivery_s"]:.1f} s ({r["per_vm_s"]:.2f} s per VM); \
**{r["configs_per_minute"]:.0f} configs a minute** {per_minute_window(r)}; the budget alone needs {r["budget_s"]} s \
for that many. Messages still held at the end: {r["held"]}.
- VMs that pulled their config from the agent's endpoint: **{r["pulled"]}** (answers: {answers}); configs \
still unread in the agent at the end: {r["still_held"]}. From the agent holding a config to its VM having it: \
p50 {r["pickup_s"][0]:.2f} s, p99 {r["pickup_s"][1]:.2f} s, max {r["pickup_s"][2]:.2f} s.
{lifecycle(r)}- Agent CPU: **{r["agent_cpu_s"]:.2f} s** for {events_text(r)} and {r["passes"]} passes, \
{r["reconciles"]} of them with a reconcile (a pass that changed nothing waits {r["idle_wait_s"]:g} s, as the \
agent's bus pull would) (**{r["agent_cpu_per_thousand_s"]:.2f} s per thousand events**).
- Runner listing with {listing["organisation runners"]} runners answered per organisation and \
{listing["runner group runners"]} in the department's runner group: **{listing["organisation"]}** GitHub requests \
per listing of the organisation, **{listing["runner group"]}** per listing of the runner group.
- Wall time of the run: {r["wall_s"]:.1f} s.
"""


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--max", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per Compute call")
    parser.add_argument("--op-seconds", type=float, default=2.0, help="seconds until an operation is done")
    parser.add_argument("--github-latency", type=float, default=0.1, help="seconds per GitHub call")
    parser.add_argument("--spread", type=float, default=10.0, help="seconds over which the jobs are queued")
    parser.add_argument("--apps", type=int, default=1, help="runner Apps, each with its own JIT budget")
    parser.add_argument(
        "--run", type=float, default=None, metavar="SECONDS",
        help="gcp: each job also starts on its VM, runs this long and completes (the agent deletes the VM)",
    )  # fmt: skip
    parser.add_argument("--cloud", choices=("gcp", "aws"), default="gcp", help="aws: AwsBackend on moto")
    parser.add_argument("--list-ttl", type=float, default=5.0, help="aws: seconds AwsBackend caches a listing")
    parser.add_argument("--write-docs", action="store_true", help="add a dated entry to docs/benchmarks.md")
    parser.add_argument("--docs", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--docs" and (i == 0 or given[i - 1] != "--docs")]
    command = shlex.join([".venv/bin/python", "bench/burst.py", *shown])
    if args.cloud == "aws":
        from bench import burst_aws

        result = burst_aws.run(args.jobs, args.max, args.github_latency, args.spread, args.list_ttl)
        entry = burst_aws.markdown(result, command)
        print(entry)
        if args.write_docs:
            add_entry("Burst on AWS", burst_aws.INTRO, entry, args.docs)
        return result
    result = run(
        args.jobs, args.max, args.latency, args.github_latency, args.op_seconds, args.spread, args.apps, args.run
    )
    entry = markdown(result, command)
    print(entry)
    if args.write_docs:
        add_entry("Burst", INTRO, entry, args.docs)
    return result


if __name__ == "__main__":
    main()
