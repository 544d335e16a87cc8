"""bench/simulate.py's breakdown of a one-piece run: every step is accounted for, once.

The speed entry in docs/benchmarks.md argues from these tables (which steps cost
what, and the floor a planner without per-VM work could reach); a breakdown that
lost or double-counted steps would argue from wrong figures.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bench.simulate import CAUSES, VM_BANDS, _band, _causes_text, _timed_whole, stack
from scaler.config import parse_stack_config
from scaler.history.generate import TraceShape, generate
from scaler.simulate.engine import Options


def test_the_one_piece_breakdown_files_every_step_once_by_cause_and_by_fleet_size() -> None:
    records = list(generate(TraceShape(days=1, jobs_per_day=400, start=datetime(2026, 11, 3, tzinfo=UTC)), seed=3))
    config = parse_stack_config(stack(small_warm=2), "bench stack")

    whole = _timed_whole(config, records, Options(seed=1, split=False))

    steps_by, cpu_by = whole["steps_by"], whole["cpu_by"]
    assert len(steps_by) == len(CAUSES) and all(len(row) == len(VM_BANDS) for row in steps_by)
    assert sum(map(sum, steps_by)) == whole["steps"] > len(records)
    assert 0 < sum(map(sum, cpu_by)) <= whole["cpu"]
    assert sum(steps_by[CAUSES.index("a job queued")]) > 0  # jobs were queued, and their steps filed as such
    assert sum(row[0] for row in steps_by) > 0  # the day begins with no VM but the warm pool

    text = _causes_text(whole, len(records), workers=2)
    for cause in CAUSES:
        assert f"| {cause} | {sum(steps_by[CAUSES.index(cause)]):,} |" in text
    for band, (_, label) in enumerate(VM_BANDS):
        assert f"| {label} | {sum(row[band] for row in steps_by):,} |" in text
    floor = float(text.split("the one-piece run would take ")[1].split(" s of CPU")[0])
    assert floor <= round(whole["cpu"]) + 1  # every step priced at its cheapest band: never more than it cost


def test_fleet_size_bands_cover_every_count_once() -> None:
    assert [_band(n) for n in (0, 24, 25, 49, 50, 99, 100, 149, 150, 10_000)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
