"""Sanity limits of `garo simulate`: what must hold when the cloud is instant and the max is unlimited."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from scaler.history.record import JobRecord
from scaler.simulate.engine import Options
from scaler.simulate.figures import figures
from scaler.simulate.models import load_latency, load_prices
from scaler.simulate.pieces import simulate
from tests.simkit import LABELS, job, latency_override, stack

LARGE = ("self-hosted", "linux", "x64", "large")


def _history(n: int = 150, seed: int = 3) -> list[JobRecord]:
    rng = random.Random(seed)
    records, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(1 / 40)  # a job every 40 s on average, some bursts of 5
        burst = 5 if rng.random() < 0.1 else 1
        for k in range(burst):
            labels = LARGE if rng.random() < 0.1 else LABELS
            records.append(job(10_000 + 10 * i + k, t, rng.uniform(30, 900), labels))
    return records


def test_instant_cloud_and_no_max_means_no_wait_and_vm_minutes_equal_job_minutes(tmp_path: Path) -> None:
    models = load_latency(latency_override(tmp_path, create=0.0))
    result = simulate(stack(max=1000), _history(), models, Options(seed=2))
    f = figures(result, load_prices())
    small = f.groups[0]
    assert small.jobs > 100 and small.never_started == 0
    assert small.wait_max == 0.0
    assert small.vm_minutes == pytest.approx(small.job_minutes, rel=1e-9, abs=1e-6)
    assert f.total.replacements == 0  # a burst swaps VMs between its jobs (stolen), but none is lost


def test_instant_cloud_with_a_warm_pool_adds_exactly_the_pool(tmp_path: Path) -> None:
    models = load_latency(latency_override(tmp_path, create=0.0))
    result = simulate(stack(max=1000, warmPool={"size": 2}), _history(), models, Options(seed=2))
    small = figures(result, load_prices()).groups[0]
    assert small.wait_max == 0.0
    assert small.warm_pool_minutes == pytest.approx(2 * (result.end - result.start) / 60)
    # Jobs land on warm VMs; the agent refills the pool at once, so the fleet is always jobs + pool.
    assert small.vm_minutes == pytest.approx(small.job_minutes + small.warm_pool_minutes, rel=0.01)


def test_slow_boot_makes_jobs_wait_at_least_the_boot(tmp_path: Path) -> None:
    models = load_latency(latency_override(tmp_path, create=20.0, boot=10.0, startup=5.0))
    result = simulate(stack(max=1000), _history(60), models, Options(seed=2))
    small = figures(result, load_prices()).groups[0]
    assert small.wait_p50 >= 35.0  # create + boot + runner start-up, no pool to take the job sooner
    assert small.vm_minutes > small.job_minutes


def test_a_small_max_queues_jobs(tmp_path: Path) -> None:
    models = load_latency(latency_override(tmp_path, create=0.0))
    records = [job(50_000 + i, 0.0, 600.0) for i in range(6)]  # a burst of 6, room for 2 at a time
    result = simulate(stack(max=2), records, models, Options(seed=2))
    waits = sorted(round(j.started - j.created) for j in result.jobs if j.started is not None)
    assert waits[:2] == [0, 0] and waits[2] >= 600 and waits[-1] >= 1200
