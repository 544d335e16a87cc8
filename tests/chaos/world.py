"""The world outside Garo in a chaos run: GitHub, Compute, and the VMs that boot runners and run jobs.

GitHub is :class:`scaler.github.sim.GitHubSim` behind
:class:`tests.harness.github_sim_http.GitHubSimServer` (its dispatcher hands a
queued job to *any* idle runner with matching labels, so jobs get stolen from
the VMs made for them). Compute is :class:`tests.harness.compute.ComputeFake`
over HTTP, every request validated against ``compute.v1.json``. A VM whose
instance is RUNNING asks the agents' JIT endpoints for its config after
``boot_delay`` (an identity token from :class:`IdentityIssuer` per agent URL,
one agent after the other, as an internal load balancer in front of several
replicas would spread its asks) and boots its runner with the config it gets;
a job runs for a random time and completes. Every change
GitHub makes is emitted as a ``workflow_job`` event to :attr:`World.emit`.

The world also keeps the record the final counts are made from: when each job
was queued, started and completed and on which VM, and when each VM (name and
Compute id) was first seen and when it went away.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from scaler import naming
from scaler.agent.jit_endpoint import PATH
from scaler.github.sim import GitHubSim
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS, MIG, REPO
from tests.harness.compute import ComputeFake, _QuietHandler
from tests.harness.gce_identity import IdentityIssuer
from tests.harness.github_sim_http import GitHubSimServer

Emit = Callable[[str, dict[str, Any]], None]


@dataclass
class JobRecord:
    id: int
    queued_at: float
    started_at: float | None = None
    runs_for: float = 0.0
    completed_at: float | None = None
    vm: str | None = None  # the runner (= VM) it ran on


@dataclass
class VmRecord:
    name: str
    compute_id: int
    first_seen: float
    gone_at: float | None = None  # deleteInstances accepted (DELETING) or no longer a member
    booted_at: float | None = None
    ran: int | None = None  # the job it ran


@dataclass
class World:
    rng: random.Random
    emit: Emit
    boot_delay: float = 1.0
    run_seconds: tuple[float, float] = (2.0, 6.0)
    jobs: dict[int, JobRecord] = field(default_factory=dict)
    vms: dict[tuple[str, int], VmRecord] = field(default_factory=dict)
    doubled: dict[int, float] = field(default_factory=dict)  # job -> when it first had two spare VMs
    compute: ComputeFake = field(init=False)
    github: GitHubSimServer = field(init=False)
    _compute_server: BaseWSGIServer = field(init=False)
    agent_urls: list[str] = field(default_factory=list)  # the agents' JIT endpoints (GARO_JIT_URL of each)
    ask_every: float = 2.0  # under the endpoint's 30 asks a minute per caller, like the boot agent's 3 s
    _asked: dict[tuple[str, int], float] = field(default_factory=dict)  # VM -> when it last asked
    _asks: dict[tuple[str, int], int] = field(default_factory=dict)  # VM -> how many times it asked
    # VM -> its ask in flight: an agent may hold an ask for a config due soon (LONG_POLL), and the
    # world's loop must not wait on it meanwhile (it would observe, start and end jobs late).
    _asking: dict[tuple[str, int], Future[str | None]] = field(default_factory=dict)
    _askers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(64, thread_name_prefix="chaos-vm-ask"), init=False
    )

    def __post_init__(self) -> None:
        self.compute = ComputeFake()
        self._compute_server = make_server(
            "127.0.0.1", 0, self.compute.wsgi, threaded=True, request_handler=_QuietHandler
        )
        self.compute.base_url = f"http://127.0.0.1:{self._compute_server.server_port}/compute/v1"
        threading.Thread(target=self._compute_server.serve_forever, name="compute-fake", daemon=True).start()
        self.compute.add_group(MIG)
        self.sim = GitHubSim(time.time, self._emit, random.Random(self.rng.random()))
        self.github = GitHubSimServer(self.sim)
        self.issuer = IdentityIssuer()
        self._certs = self.issuer.serve()
        self.certs_url = self._certs.__enter__()  # GARO_JIT_CERTS_URL of every agent

    def close(self) -> None:
        self._askers.shutdown(wait=False, cancel_futures=True)
        self.github.close()
        self._compute_server.shutdown()
        self._certs.__exit__(None, None, None)

    def _pull(self, key: tuple[str, int], zone: str, now: float) -> str | None:
        """VM ``key``'s config once an ask (of the next agent in turn) brought it; None meanwhile.

        Each VM asks from its own loopback address (127.0.x.y, from its Compute
        id), as each real VM has its own IP: the endpoint limits each caller.
        Asks run in the background, one per VM at a time, so that an agent
        holding one for a config due soon stalls that VM only, as on a real fleet.
        """
        asking = self._asking.get(key)
        if asking is not None:
            if not asking.done():
                return None
            del self._asking[key]
            return asking.result()
        if not self.agent_urls or now - self._asked.get(key, float("-inf")) < self.ask_every:
            return None
        asks = self._asks.get(key, 0)
        self._asked[key], self._asks[key] = now, asks + 1
        url = self.agent_urls[asks % len(self.agent_urls)]
        token = self.issuer.token(url, key[0], project=self.compute.project, zone=zone)
        source = f"127.0.{key[1] // 250 % 250}.{key[1] % 250 + 2}"
        self._asking[key] = self._askers.submit(self._ask, url, token, source)
        return None

    @staticmethod
    def _ask(url: str, token: str, source: str) -> str | None:
        """One POST to an agent's JIT endpoint, timing out as the boot agent's does (20 s)."""
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=20, source_address=(source, 0))
        try:
            conn.request("POST", PATH, headers={"Authorization": f"Bearer {token}", "Content-Length": "0"})
            answer = conn.getresponse()
            body = answer.read().decode()
        except OSError:
            return None  # that agent is down (killed): ask another next time
        finally:
            conn.close()
        return body if answer.status == 200 else None

    def _emit(self, action: str, payload: dict[str, Any]) -> None:
        self.emit(action, payload)

    # ------------------------------------------------------------------ GitHub's side

    def queue_job(self) -> int:
        with self.github.lock:
            job = self.sim.queue_job(REPO, LABELS)
        self.jobs[job.id] = JobRecord(job.id, time.monotonic())
        return job.id

    def tick(self) -> None:
        """One step of the world: observe VMs, boot runners, dispatch jobs, finish jobs."""
        now = time.monotonic()
        members = self.compute.members(MIG)
        with self.github.lock:
            self._observe(members, now)
            for job in self.sim.assign():
                record = self.jobs[job.id]
                record.started_at, record.vm = now, job.runner.name if job.runner else None
                record.runs_for = self.rng.uniform(*self.run_seconds)
                for vm in self.vms.values():
                    if vm.name == record.vm and vm.gone_at is None:
                        vm.ran = job.id
            for record in self.jobs.values():
                if record.started_at is not None and record.completed_at is None:
                    if now - record.started_at >= record.runs_for:
                        self.sim.complete(record.id)
                        record.completed_at = now
            self._spares(now)

    def _observe(self, members: dict[str, Any], now: float) -> None:
        live = set()
        for name, inst in members.items():
            key = (name, inst.id)
            live.add(key)
            vm = self.vms.setdefault(key, VmRecord(name, inst.id, now))
            if inst.action == "DELETING" and vm.gone_at is None:
                vm.gone_at = now
            if vm.booted_at is None and inst.status == "RUNNING" and vm.gone_at is None:
                if now - vm.first_seen >= self.boot_delay:
                    secret = self._pull(key, inst.zone, now)
                    if secret and self.sim.boot(secret):
                        vm.booted_at = now
        for key, vm in self.vms.items():
            if key not in live and vm.gone_at is None:
                vm.gone_at = now

    def _spares(self, now: float) -> None:
        """A job has two VMs when two live VMs made for it have run nothing (and it still waits)."""
        spare: dict[int, int] = {}
        for vm in self.vms.values():
            job = naming.job_of(DEPARTMENT, GROUP, vm.name)
            if vm.gone_at is None and vm.ran is None and job is not None:
                spare[job] = spare.get(job, 0) + 1
        for job, count in spare.items():
            record = self.jobs.get(job)
            if count > 1 and record is not None and record.started_at is None:
                self.doubled.setdefault(job, now)

    # ------------------------------------------------------------------ views

    def live_vms(self) -> list[VmRecord]:
        return [vm for vm in self.vms.values() if vm.gone_at is None]

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self.jobs.values() if r.completed_at is None]
