"""The synthetic trace generator: the shape pool sizing depends on, deterministic per seed, marked synthetic."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from scaler.cli import main
from scaler.history.generate import TraceShape, generate
from scaler.history.record import read_history

SHAPE = TraceShape(days=14, jobs_per_day=800, start=datetime(2026, 11, 2, tzinfo=UTC))


def test_the_load_follows_office_hours_and_weekdays() -> None:
    jobs = list(generate(SHAPE, seed=7))
    by_hour = Counter(j.created_at.hour for j in jobs if j.created_at.weekday() < 5)
    office = sum(by_hour[h] for h in range(10, 16)) / 6
    night = sum(by_hour[h] for h in range(0, 6)) / 6
    assert office > 4 * night, (office, night)
    weekday = Counter(j.created_at.date() for j in jobs if j.created_at.weekday() < 5)
    weekend = Counter(j.created_at.date() for j in jobs if j.created_at.weekday() >= 5)
    assert statistics.mean(weekday.values()) > 3 * statistics.mean(weekend.values())
    # The requested volume, within sampling noise.
    assert abs(len(jobs) / SHAPE.days - SHAPE.jobs_per_day) < 0.15 * SHAPE.jobs_per_day


def test_matrix_bursts_long_tails_and_the_label_mix() -> None:
    jobs = list(generate(SHAPE, seed=7))
    runs = Counter(j.run_id for j in jobs)
    bursts = [run for run, n in runs.items() if n >= 8]
    assert bursts, "no matrix burst"
    burst = [j for j in jobs if j.run_id == bursts[0]]
    assert (max(j.created_at for j in burst) - min(j.created_at for j in burst)).total_seconds() < 2
    assert len({j.labels for j in burst}) == 1  # a matrix shares its labels
    durations = sorted(j.duration.total_seconds() for j in jobs if j.duration is not None)
    p50, p99 = durations[len(durations) // 2], durations[int(len(durations) * 0.99)]
    assert p99 > 8 * p50 and durations[-1] <= 360 * 60
    mix = Counter(j.labels[-1] for j in jobs)
    assert mix["small"] > mix["medium"] > mix["large"] > mix["gpu"] > 0
    assert {j.source for j in jobs} == {"synthetic"} and all(j.repository.startswith("synthetic/") for j in jobs)


def test_the_same_seed_gives_the_same_file_and_another_seed_another(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["history", "generate", "--days", "3", "--jobs-per-day", "300", "--seed"]
    outputs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(main, [*args, seed, "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]
    report = read_history(tmp_path / "a.jsonl")  # the strict reader accepts every generated line
    created = [r.created_at for r in report.records]
    assert created == sorted(created) and len(report.records) > 500


def test_a_bad_label_mix_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    result = CliRunner().invoke(main, ["history", "generate", "--seed", "1", "--labels", "a,b=x", "--out", str(out)])
    assert result.exit_code == 1 and "expected labels=weight" in result.stderr
    assert not out.exists()
