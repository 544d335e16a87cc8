"""Shared pieces of the `garo simulate` tests: a department stack, latency overrides, small histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from scaler.config import StackConfig, parse_stack_config
from scaler.history.record import JobRecord

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
LABELS = ("self-hosted", "linux", "x64", "small")
STACK_TEXT = """\
# Department "eng": the stack `garo simulate` is tested on.
config:
  gcp:project: acme-ci-eng
  garo:kind: department
  garo:cloud: gcp
  garo:region: us-central1
  garo:department: eng
  garo:github:
    org: acme
  garo:network:
    cidr: 10.20.0.0/20
  garo:reconcileInterval: 30
  garo:groups:
    - name: small
      labels: [self-hosted, linux, x64, small]
      machineType: e2-standard-4
      max: 20
      warmPool:
        size: 0   # none yet
      timeToStart: 120
    - name: large
      labels: [self-hosted, linux, x64, large]
      machineType: n2-standard-16
      max: 4
      standbyPool: {size: 0}
"""


def stack_raw(**small: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(STACK_TEXT)["config"]
    raw["garo:groups"][0].update(small)
    return raw


def stack(**small: Any) -> StackConfig:
    return parse_stack_config(stack_raw(**small), "test stack")


def fixed(seconds: float) -> dict[str, Any]:
    return {"distribution": "fixed", "median": seconds, "evidence": "assumed", "sources": []}


def latency_override(
    tmp_path: Path, *, create: float, boot: float = 0.0, startup: float = 0.0, delete: float = 0.0
) -> Path:
    """A latency file with fixed times and no failures: the simulated cloud becomes deterministic."""
    phases = {
        "create": fixed(create),
        "boot": fixed(boot),
        "resume_suspended": fixed(create),
        "resume_stopped": fixed(create),
        "delete": fixed(delete),
        "capacity_error_rate": {"value": 0.0, "evidence": "assumed", "sources": []},
        "spot_preemption_per_hour": {"value": 0.0, "evidence": "assumed", "sources": []},
    }
    path = tmp_path / "latency.yaml"
    path.write_text(yaml.safe_dump({"runner_startup": fixed(startup), "clouds": {"gce": phases}}))
    return path


def job(job_id: int, created: float, duration: float, labels: tuple[str, ...] = LABELS) -> JobRecord:
    """A job queued `created` seconds after T0 that runs `duration` seconds (its recorded wait is not used)."""
    at = T0 + timedelta(seconds=created)
    return JobRecord(
        id=job_id,
        repository="acme/app",
        labels=labels,
        created_at=at,
        source="synthetic",
        started_at=at,
        completed_at=at + timedelta(seconds=duration),
        run_attempt=1,
        conclusion="success",
    )
