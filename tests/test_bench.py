"""The benchmark generators write honest entries: a short run of each, twice, into a scratch benchmarks.md.

Each run must add a dated entry headed by its exact command, keep the earlier
entry below it, and state no figure that is not a value of that run (or of its
arguments and machine): no frozen prose, no hard-coded latency.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import burst, webhook

# Words with digits that are names, not figures.
LABELS = re.compile(r"p99\.9|p50|p99|non-202|Flask 202|Python \d+\.\d+\.\d+")


def numbers(value: Any) -> Iterator[float]:
    """Every number in a result, however nested."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from numbers(v)


def unexplained_figures(entry: str, allowed: list[float]) -> list[str]:
    """Figures in the entry's body (below its heading) that no allowed value rounds to."""
    body = LABELS.sub("", entry.split("\n", 1)[1])
    odd = []
    for match in re.finditer(r"(\d+(?:\.\d+)?)(%?)", body):
        text, percent = match.groups()
        decimals = len(text.split(".")[1]) if "." in text else 0
        slack = 0.5 * 10**-decimals + 1e-9
        candidates = [v * 100 for v in allowed] if percent else allowed
        if not any(math.isfinite(v) and abs(float(text) - v) <= slack for v in candidates):
            odd.append(match.group(0))
    return odd


def entries(docs: Path, section: str) -> list[str]:
    text = docs.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    part = text[start : end if end != -1 else len(text)]
    return ["### " + chunk for chunk in part.split("\n### ")[1:]]


def test_burst_entries_carry_only_figures_of_their_run(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    first = ["--jobs", "3", "--max", "2", "--latency", "0.01", "--op-seconds", "0.05"]
    first += ["--github-latency", "0.02", "--spread", "0.2", "--write-docs", "--docs", str(docs)]
    burst.main(first)
    second = ["--jobs", "4", "--max", "4", "--latency", "0.02", "--op-seconds", "0.05"]
    second += ["--github-latency", "0.01", "--spread", "0.3", "--write-docs", "--docs", str(docs)]
    result = burst.main(second)

    newest, older = entries(docs, "Burst")
    assert re.match(r"### \d{4}-\d{2}-\d{2} · `\.venv/bin/python bench/burst\.py --jobs 4 --max 4 ", newest)
    assert "--jobs 3 --max 2" in older.splitlines()[0]  # history stays, below the new entry
    assert "--docs" not in newest.splitlines()[0]
    assert unexplained_figures(newest, list(numbers(result))) == []
    assert "Compute 20 ms per call" in newest and "GitHub 10 ms per call" in newest  # from the arguments
    assert f"| **total** | **{result['compute_total']}** |" in newest
    assert result["jit_configs"] == 4 and result["peak"] == 4


def test_webhook_entries_carry_only_figures_of_their_run(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    base = ["--duration", "1", "--warmup", "0.2", "--rounds", "1", "--publish-samples", "20"]
    webhook.main([*base, "--clients", "1", "--write-docs", "--docs", str(docs)])
    argv = [*base, "--clients", "2", "--write-docs", "--docs", str(docs)]
    summary = webhook.main(argv)

    newest, older = entries(docs, "Webhook intake")
    assert newest.splitlines()[0].endswith(f"`.venv/bin/python bench/webhook.py {' '.join(argv[:-2])}`")
    assert "--clients 1" in older.splitlines()[0]
    args = argparse.Namespace(duration=1, warmup=0.2, rounds=1, clients=2, reconnect_every=100)
    assert f"Python {platform.python_version()}" in newest
    allowed = [*numbers(summary), *numbers(vars(args)), float(os.cpu_count() or 0)]
    assert unexplained_figures(newest, allowed) == []
    rows = summary["rows"]
    assert isinstance(rows, dict)
    assert all(row["errors"] == 0 for row in rows.values())
    assert "How to read it" not in docs.read_text()  # the old frozen prose is gone


def test_the_checker_catches_a_frozen_figure() -> None:
    entry = "### 2026-01-01 · `cmd`\n\nDelivery took 333 s at 100 ms per call.\n"
    assert unexplained_figures(entry, [333.0]) == ["100"]
    assert unexplained_figures("### h\n\nratio **44%**\n", [0.44]) == []


@pytest.mark.parametrize("section", ["Webhook intake", "Burst", "Burst on AWS"])
def test_committed_benchmarks_keep_dated_entries_under_each_section(section: str) -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    found = entries(docs, section)
    assert found
    for entry in found:
        assert re.match(r"### \d{4}-\d{2}-\d{2}.* · `[^`]*bench/\w+\.py[^`]*`\n", entry), entry.splitlines()[0]


def test_aws_burst_entries_count_every_aws_call_of_their_run(tmp_path: Path) -> None:
    """``--cloud aws``: AwsBackend on moto; calls by method add up, create to delete, and no PutObject."""
    docs = tmp_path / "benchmarks.md"
    argv = ["--cloud", "aws", "--jobs", "4", "--max", "3", "--github-latency", "0.01", "--spread", "0"]
    argv += ["--list-ttl", "0.5", "--write-docs", "--docs", str(docs)]
    result = burst.main(argv)

    [entry] = entries(docs, "Burst on AWS")
    assert entry.splitlines()[0].endswith(f"`.venv/bin/python bench/burst.py {' '.join(argv[:-2])}`")
    assert unexplained_figures(entry, list(numbers(result))) == []
    calls = result["aws_calls"]
    assert calls["RunInstances"] < 3 and result["launched"] == 4  # batched; the 4th job's VM once one is free
    assert "PutObject" not in calls and result["jit_in_vault"] == 3  # configs wait in the agent, to be pulled
    assert result["members"] == 3 and result["aws_errors"] == {}
    assert result["completed"] == 4 and result["left"] == 0  # every job done, every VM deleted
    removals = calls.get("DetachInstances", 0) + calls.get("TerminateInstanceInAutoScalingGroup", 0)
    assert 1 <= removals <= result["completed"]  # by id with decrement, never more than a call per VM
    assert result["aws_total"] == sum(calls.values()) == result["create_calls"] + result["delete_calls"]
    assert f"| **total** | **{result['aws_total']}** | **{result['calls_per_job']:.3f}** |" in entry


def test_fixed_rate_entries_carry_only_figures_of_their_run(tmp_path: Path) -> None:
    from bench import webhook_rates

    docs = tmp_path / "benchmarks.md"
    argv = ["--rates", "50,80", "--duration", "1", "--warmup", "0.2", "--clients", "2"]
    rows = webhook_rates.main([*argv, "--write-docs", "--docs", str(docs)])
    (newest,) = entries(docs, "Webhook at fixed rates")
    assert newest.splitlines()[0].endswith(f"`.venv/bin/python bench/webhook_rates.py {' '.join(argv)} --write-docs`")
    assert [r["rate"] for r in rows] == [50, 80] and all(r["errors"] == 0 for r in rows)
    assert all(r["requests"] > 0 and r["cpu_ms_per_request"] > 0 for r in rows)
    allowed = [*numbers(rows), 1.0, 0.2, 2.0, 64.0, float(os.cpu_count() or 0)]  # 64: --connections default
    assert unexplained_figures(newest, allowed) == []


def test_a_burst_of_whole_job_lives_deletes_every_vm_and_counts_all_three_events(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    argv = ["--jobs", "4", "--max", "2", "--latency", "0.01", "--op-seconds", "0.05", "--github-latency", "0.01"]
    argv += ["--spread", "0.2", "--run", "0.3", "--write-docs", "--docs", str(docs)]
    result = burst.main(argv)

    # Max 2 for 4 jobs: the last two get VMs only once the first ones completed and their VMs went.
    assert result["completed"] == 4 and result["members_left"] == 0 and result["held"] == 0
    assert result["events"] == 12  # queued, in_progress and completed of each job reached the agent
    assert result["compute_calls"].get("regionInstanceGroupManagers.deleteInstances", 0) >= 1
    assert result["reconciles"] >= 1  # the measured CPU includes reconcile passes
    (entry,) = entries(docs, "Burst")
    assert "Jobs completed: **4**; VMs left at the end: **0**" in entry
    assert unexplained_figures(entry, list(numbers(result))) == []
