"""The chaos run's fault schedule: a pure function of the seed, the load's duration and the replica count.

Faults start a few seconds into the load and stop when the load ends, so the
drain that follows shows whether the system heals on its own. Every kind of
fault appears at least once in every schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("kill-agent", "kill-webhook-worker", "bus-outage", "compute-errors", "github-errors")
COMPUTE_METHODS = (
    None,
    "regionInstanceGroupManagers.createInstances",
    "regionInstanceGroupManagers.deleteInstances",
    "regionInstanceGroupManagers.listManagedInstances",
    "instances.setMetadata",
)
GITHUB_ENDPOINTS = (None, "jit", "list", "delete", "job")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load starts
    kind: str
    target: int = 0  # agent replica (kill-agent)
    seconds: float = 0.0  # how long the agent stays down, or the bus outage lasts
    status: int = 0  # injected HTTP status (compute-errors, github-errors)
    count: int = 0  # how many requests get it
    where: str | None = None  # which method or endpoint (None: any)

    def __str__(self) -> str:
        detail = {
            "kill-agent": f"agent-{self.target}, restarted after {self.seconds:.1f} s",
            "kill-webhook-worker": "a random gunicorn worker",
            "bus-outage": f"{self.seconds:.1f} s",
        }.get(self.kind, f"{self.count} x HTTP {self.status} on {self.where or 'any call'}")
        return f"{self.at:6.1f} s  {self.kind:<20} {detail}"


def fault_schedule(seed: int, duration: float, replicas: int, every: tuple[float, float] = (2.0, 5.0)) -> list[Fault]:
    rng = random.Random(f"chaos-faults-{seed}")
    first = list(KINDS)
    rng.shuffle(first)
    faults: list[Fault] = []
    at = min(3.0, duration / 4)
    while at < duration:
        kind = first.pop() if first else rng.choice(KINDS)
        faults.append(_fault(rng, kind, round(at, 2), replicas))
        at += rng.uniform(*every)
    return faults


def _fault(rng: random.Random, kind: str, at: float, replicas: int) -> Fault:
    if kind == "kill-agent":
        return Fault(at, kind, target=rng.randrange(replicas), seconds=round(rng.uniform(0.5, 4.0), 1))
    if kind == "bus-outage":
        return Fault(at, kind, seconds=round(rng.uniform(2.0, 6.0), 1))
    if kind == "compute-errors":
        status = rng.choice((500, 503, 429))
        return Fault(at, kind, status=status, count=rng.randint(2, 8), where=rng.choice(COMPUTE_METHODS))
    if kind == "github-errors":
        status = rng.choice((500, 502, 429))
        return Fault(at, kind, status=status, count=rng.randint(2, 8), where=rng.choice(GITHUB_ENDPOINTS))
    return Fault(at, kind)
