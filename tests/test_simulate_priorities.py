"""`garo simulate` shows what priority classes do under contention: p95 wait per class (issue 15)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scaler.config import parse_stack_config
from scaler.simulate.engine import Options
from scaler.simulate.figures import figures, table
from scaler.simulate.models import load_latency, load_prices
from scaler.simulate.pieces import simulate
from tests.simkit import job, latency_override, stack_raw


def test_waits_are_reported_per_priority_class_when_the_group_is_full(tmp_path: Path) -> None:
    raw = stack_raw(max=2)
    raw["garo:priorities"] = [{"class": "deploy", "repositories": ["acme/deploy"]}]
    config = parse_stack_config(raw, "test stack")
    # Twelve jobs at once, each 10 minutes long, on a group of at most 2 VMs: one in three is a deploy job.
    history = [
        dataclasses.replace(job(1000 + i, float(i), 600.0), repository="acme/deploy" if i % 3 == 2 else "acme/app")
        for i in range(12)
    ]
    models = load_latency(latency_override(tmp_path, create=30.0))
    result = figures(simulate(config, history, models, Options(seed=1, drain=7200.0)), load_prices())
    deploy, normal = result.waits_by_class["deploy"], result.waits_by_class["normal"]
    assert (deploy[0], normal[0]) == (4, 8)  # every job started: none starves
    # What this view shows a platform team: with one label set for all classes, GitHub gives a
    # free runner to whichever matching job it picks, so the order in which Garo makes VMs does not
    # decide which class runs first (docs/agent.md, "Priorities"); p95 per class says so.
    assert deploy[2] > 0 and normal[2] > 0
    assert "class deploy" in table(result) and "class normal" in table(result)


def test_without_priorities_there_is_no_per_class_view(tmp_path: Path) -> None:
    config = parse_stack_config(stack_raw(max=2), "test stack")
    history = [job(2000 + i, float(i), 60.0) for i in range(3)]
    result = figures(simulate(config, history, load_latency(latency_override(tmp_path, create=5.0))), load_prices())
    assert result.waits_by_class == {}


def test_with_class_runner_groups_deploy_jobs_wait_least(tmp_path: Path) -> None:
    """The same contention with a runner group per class: GitHub can hand a deploy VM to deploy jobs only."""
    raw = stack_raw(max=2)
    raw["garo:priorities"] = [{"class": "deploy", "repositories": ["acme/deploy"]}]
    raw["garo:priorityAging"] = 3600  # longer than the test's waits: aging does not blur the classes here
    history = [
        dataclasses.replace(job(1000 + i, float(i), 600.0), repository="acme/deploy" if i % 3 == 2 else "acme/app")
        for i in range(12)
    ]
    models = load_latency(latency_override(tmp_path, create=30.0))
    shared = figures(
        simulate(parse_stack_config(raw, "t"), history, models, Options(seed=1, drain=7200.0)), load_prices()
    )
    raw["garo:priorityRunnerGroups"] = True
    exact = figures(
        simulate(parse_stack_config(raw, "t"), history, models, Options(seed=1, drain=7200.0)), load_prices()
    )
    deploy, normal = exact.waits_by_class["deploy"], exact.waits_by_class["normal"]
    assert (deploy[0], normal[0]) == (4, 8)  # every job started: none starves
    # The first two slots go to the two jobs heard of first (no deploy yet); then the four deploys take
    # the next two rounds of slots, so no deploy waits beyond the second round of ten-minute jobs.
    assert deploy[2] < 2 * 600 + 120 < normal[2]
    assert deploy[2] < shared.waits_by_class["deploy"][2]
