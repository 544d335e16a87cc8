"""The simulator agrees with the real loop.

One scenario, twice: through the real agent on the local backend in real time
(the deployed loop's shape: step, look at the world, step again), and through
`garo simulate`'s engine in virtual time with a latency model that says what
the local backend does (a VM runs `boot_delay` after its create; nothing else
takes time). Both must create the same VMs in the same order, GitHub must send
the same events in the same order, and each job's wait must match within the
real loop's polling noise.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.backends.base import JIT_KEY
from scaler.backends.local import LocalBackend
from scaler.backends.local_vm import SimulatedVms
from scaler.github.sim import GitHubSim
from scaler.simulate.bus import SimBus
from scaler.simulate.engine import Options
from scaler.simulate.models import load_latency
from scaler.simulate.pieces import simulate
from tests.simkit import LABELS, job, latency_override, stack

BOOT = 0.5
FIRST_ID = 5_000_000_001  # GitHubSim's first job id: both runs then name the same VMs
# (queued at, runs for) in seconds: two jobs together, then one alone
SCENARIO = [(0.0, 2.0), (0.0, 2.0), (4.0, 1.0)]
POLL = 0.02


def _real_run() -> tuple[list[tuple[str, int]], list[str], dict[int, float]]:
    config = stack(max=10)
    events: list[tuple[str, int]] = []
    bus = SimBus(time.time)

    def emit(action: str, payload: dict[str, Any]) -> None:
        job_id = int(payload["workflow_job"]["id"])
        bus.publish_event(config.department, "small", action, payload)
        events.append((action, job_id))

    github = GitHubSim(time.time, emit, random.Random(0))
    backend = LocalBackend(None, boot_delay=BOOT, clock=time.time)

    def boot(group: str, name: str, metadata: dict[str, str]) -> None:
        github.boot(metadata[JIT_KEY])

    vms = SimulatedVms(backend, on_boot=boot)
    agent = Agent(config, backend, github, bus, registry=CollectorRegistry(), pull_timeout=0.0)
    start = time.time()
    to_queue = list(enumerate(SCENARIO))
    started: dict[int, float] = {}
    done: set[int] = set()
    created: list[str] = []
    while time.time() - start < 30:
        elapsed = time.time() - start
        while to_queue and to_queue[0][1][0] <= elapsed:
            to_queue.pop(0)
            github.queue_job("acme/app", LABELS)
        vms.step()
        for j in github.assign():
            started[j.id] = time.time()
        agent.step()
        for inst in backend.list("small"):
            if inst.name not in created:
                created.append(inst.name)
        for job_id, at in list(started.items()):
            index = job_id - FIRST_ID
            if job_id not in done and time.time() - at >= SCENARIO[index][1]:
                runner = github.jobs[job_id].runner
                github.complete(job_id)
                done.add(job_id)
                if runner is not None:
                    vms.finish("small", runner.name)
        if not to_queue and len(done) == len(SCENARIO) and not backend.list("small"):
            break
        time.sleep(POLL)
    waits = {j.id: (j.started_at or 0.0) - j.created_at for j in github.jobs.values()}
    return events, created, waits


def test_the_simulator_and_the_real_loop_agree(tmp_path: Path) -> None:
    real_events, real_vms, real_waits = _real_run()

    records = [job(FIRST_ID + i, at, runs) for i, (at, runs) in enumerate(SCENARIO)]
    models = load_latency(latency_override(tmp_path, create=BOOT))
    result = simulate(stack(max=10), records, models, Options(seed=1, keep_log=True))
    sim_events = [(action, job_id) for _, action, job_id in result.events]
    sim_vms = [name for _, event, name in result.vm_log if event == "create"]
    sim_waits = {j.id: (j.started or 0.0) - j.created for j in result.jobs}

    assert sim_events == real_events
    assert [a for a, _ in sim_events] == [
        "queued",
        "queued",
        "in_progress",
        "in_progress",
        "completed",
        "completed",
    ] + [
        "queued",
        "in_progress",
        "completed",
    ]
    assert sim_vms == real_vms  # the same VMs, named after the same jobs, created in the same order
    assert [naming.job_of("eng", "small", name) for name in sim_vms] == [FIRST_ID, FIRST_ID + 1, FIRST_ID + 2]
    for job_id, wait in sim_waits.items():
        assert wait == pytest.approx(BOOT)  # virtual time: exactly the model's boot
        assert real_waits[job_id] == pytest.approx(wait, abs=1.0)  # real time: plus the loop's polling
