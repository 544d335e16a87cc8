"""A whole simulated world for the agent: GitHub, the bus, a local fleet, VMs booting.

Time is a number the test moves forward, so reconcile intervals, boot delays
and time-to-start are exercised without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.backends.base import Backend, InstanceState
from scaler.backends.local import LocalBackend
from scaler.backends.local_vm import SimulatedVms
from scaler.config import StackConfig, parse_stack_config
from scaler.github.sim import GitHubSim, SimJob
from tests.agent.aws_faults import AwsFaults
from tests.agent.membus import MemoryBus

DEPARTMENT = "eng"
ACTIVE = {InstanceState.CREATING, InstanceState.RUNNING, InstanceState.RESUMING}
logging.getLogger("garo.agent").setLevel(logging.ERROR)


def make_config(
    *, max_linux: int = 6, max_gpu: int = 3, warm: int = 0, standby: int = 0, interval: int = 30, **extra: Any
) -> StackConfig:
    raw: dict[str, Any] = {
        "garo:kind": "department",
        "garo:cloud": "local",
        "garo:region": "local",
        "garo:department": DEPARTMENT,
        "garo:github": {"org": "octo-org"},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:reconcileInterval": interval,
        "garo:groups": [
            {
                "name": "linux",
                "labels": ["self-hosted", "linux", "x64", "eng-linux"],
                "max": max_linux,
                "warmPool": {"size": warm},
                "standbyPool": {"size": standby},
                "timeToStart": 120,
                "timeToLive": 3600,
            },
            {
                "name": "gpu",
                "labels": ["self-hosted", "linux", "x64", "eng-gpu"],
                "max": max_gpu,
                "timeToStart": 120,
                "timeToLive": 3600,
            },
        ],
    }
    raw.update(extra)
    return parse_stack_config(raw)


class World:
    def __init__(
        self, seed: int = 0, replicas: int = 1, *, boot_delay: float = 20.0, cloud: str = "local", **bus_faults: Any
    ) -> None:
        """``cloud="aws"``: the agents' backend refuses calls and names in AWS's words (tests/agent/aws_faults.py)."""
        self.now = 1_700_000_000.0
        self.rng = random.Random(seed)
        self.config_kwargs: dict[str, Any] = {}
        self.config = make_config()
        self.bus = MemoryBus(self.clock, self.rng, **bus_faults)
        self.github = GitHubSim(self.clock, self._emit, self.rng)
        self.backend = LocalBackend(None, boot_delay=boot_delay, clock=self.clock)
        self.vms = SimulatedVms(self.backend, on_boot=self._on_boot)
        self.agent_backend: Backend = self.backend
        if cloud == "aws":
            self.agent_backend = AwsFaults(self.backend, random.Random(seed + 1))
        self.agents = [self.new_agent() for _ in range(replicas)]
        self.group_of_job: dict[int, str] = {}
        self.finished_at: dict[tuple[str, float], float] = {}  # (name, created_at) -> when its job ended
        self.last_restart = self.now
        self.ever_created: dict[str, int] = {}

    def configure(self, **kwargs: Any) -> None:
        self.config = make_config(**kwargs)
        self.agents = [self.new_agent() for _ in self.agents]

    @contextlib.contextmanager
    def calm(self) -> Iterator[None]:
        """No injected cloud faults inside the block (the AWS-vocabulary backend's refusals pause)."""
        faults = self.agent_backend if isinstance(self.agent_backend, AwsFaults) else None
        rate = faults.rate if faults is not None else 0.0
        if faults is not None:
            faults.rate = 0.0
        try:
            yield
        finally:
            if faults is not None:
                faults.rate = rate

    def clock(self) -> float:
        return self.now

    def new_agent(self) -> Agent:
        return Agent(
            self.config, self.agent_backend, self.github, self.bus, clock=self.clock, registry=CollectorRegistry()
        )

    # ------------------------------------------------------------------ the outside world

    def _emit(self, action: str, payload: dict[str, Any]) -> None:
        labels = set(payload["workflow_job"]["labels"])
        group = "gpu" if "eng-gpu" in labels else "linux"
        self.bus.publish_event(DEPARTMENT, group, action, payload)

    def _on_boot(self, group: str, name: str, metadata: dict[str, str]) -> None:
        self.github.boot(metadata["garo-jit-config"])

    def queue(self, group: str = "linux") -> SimJob:
        labels = self.config.group(group).labels
        job = self.github.queue_job("octo-org/app", labels)
        self.group_of_job[job.id] = group
        return job

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.vms.step()
        self.github.assign()
        self.note_instances()

    def finish(self, job: SimJob) -> None:
        runner = job.runner
        self.github.complete(job.id)
        if runner is not None:
            group = naming.group_of(DEPARTMENT, ["linux", "gpu"], runner.name) or "linux"
            self.vms.finish(group, runner.name)
            # keyed by (name, created_at): a later VM may reuse the name for another job
            for inst in self.instances(group):
                if inst.name == runner.name:
                    self.finished_at[(inst.name, inst.created_at)] = self.now

    def step(self, i: int = 0) -> None:
        self.agents[i].step()
        self.note_instances()

    def restart(self, i: int = 0) -> None:
        self.agents[i] = self.new_agent()
        self.last_restart = self.now

    # ------------------------------------------------------------------ views

    def instances(self, group: str) -> list[Any]:
        return list(self.backend.list(group))

    def active(self, group: str) -> list[Any]:
        return [i for i in self.instances(group) if i.state in ACTIVE]

    def busy_names(self) -> set[str]:
        return {r.name for r in self.github.runners.values() if r.job is not None}

    def note_instances(self) -> None:
        for group in ("linux", "gpu"):
            for inst in self.instances(group):
                key = f"{inst.name}@{inst.created_at}"
                self.ever_created.setdefault(key, 1)
