"""A long history runs in pieces, in parallel processes, with the figures of one run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from scaler.history.generate import TraceShape, generate
from scaler.history.record import JobRecord
from scaler.simulate.engine import Options, RunResult, Simulation, route_all
from scaler.simulate.figures import figures
from scaler.simulate.models import load_latency, load_prices
from scaler.simulate.pieces import cut, simulate
from tests.simkit import LABELS, T0, job, latency_override, stack

LARGE = ("self-hosted", "linux", "x64", "large")
# Thursday to Tuesday: two working days, a quiet weekend, two working days.
SHAPE = TraceShape(
    days=6, jobs_per_day=160, start=T0 + timedelta(days=3), labels=((LABELS, 0.9), (LARGE, 0.1)), matrix_share=0.02
)


@dataclass(frozen=True)
class Runs:
    records: list[JobRecord]
    whole: RunResult
    pieces_one_process: RunResult
    pieces_two_processes: RunResult


@pytest.fixture(scope="module")
def runs() -> Runs:
    records = list(generate(SHAPE, seed=5))
    models = load_latency()
    return Runs(
        records,
        simulate(stack(), records, models, Options(seed=3, split=False)),
        simulate(stack(), records, models, Options(seed=3, piece_jobs=200, workers=1)),
        simulate(stack(), records, models, Options(seed=3, piece_jobs=200, workers=2)),
    )


def test_a_piece_begins_where_fewest_jobs_are_in_flight_and_replays_those_without_counting_them() -> None:
    # Two bursts of 30 jobs an hour apart, a third a day later. A job is in flight for half an hour
    # after it ends, so where the second burst begins the first one's last four jobs still are.
    records = [job(100 + i, 60.0 * i, 300.0, LABELS) for i in range(30)]
    records += [job(200 + i, 3600.0 + 60.0 * i, 300.0, LABELS) for i in range(30)]
    records += [job(300 + i, 86_400.0 + 60.0 * i, 300.0, LABELS) for i in range(30)]
    routed, _ = route_all(stack().groups, records)
    pieces = cut(routed, min_jobs=20, seed=1)
    assert [[r.id for r, _ in p.jobs][0] for p in pieces] == [100, 200, 300]
    assert [[r.id for r, _ in p.lead_in] for p in pieces] == [[], [126, 127, 128, 129], []]  # none at the quiet night
    begins = [(T0 + timedelta(seconds=at)).timestamp() for at in (3600.0, 86_400.0)]
    assert [p.begins for p in pieces] == [None, *begins]
    assert [p.until for p in pieces] == [*begins, None]  # each window ends where the next begins; the last drains
    assert len({p.seed for p in pieces}) == 3  # each piece draws its own latencies
    # A piece has min_jobs to 2 * min_jobs jobs: with 40, the second burst is split where it has
    # the fewest jobs in flight, its 11th (ten before it still are), and the rest stays together.
    assert [(len(p.jobs), len(p.lead_in)) for p in cut(routed, min_jobs=40, seed=1)] == [(40, 0), (50, 10)]


def test_a_history_in_pieces_gives_the_same_figures_in_one_process_or_two(runs: Runs) -> None:
    one, two, prices = runs.pieces_one_process, runs.pieces_two_processes, load_prices()
    assert one.pieces == two.pieces >= 2
    assert figures(one, prices) == figures(two, prices)
    # Every routed job is in the result once, in order of creation.
    ids = [j.id for j in one.jobs]
    assert Counter(ids) == Counter(r.id for r, _ in route_all(stack().groups, runs.records)[0])
    assert [j.created for j in one.jobs] == sorted(j.created for j in one.jobs)


def test_a_history_in_pieces_agrees_with_one_run_within_the_latency_models_noise(runs: Runs) -> None:
    whole = figures(runs.whole, load_prices()).total
    split = figures(runs.pieces_one_process, load_prices()).total
    assert runs.whole.pieces == 1 and runs.pieces_one_process.pieces >= 2
    assert split.jobs == whole.jobs and split.never_started == whole.never_started == 0
    assert split.job_minutes == pytest.approx(whole.job_minutes)
    # Each piece counts only its window: the replayed jobs' VMs are billed once.
    assert split.vm_minutes == pytest.approx(whole.vm_minutes, rel=0.02)
    assert split.wait_p50 == pytest.approx(whole.wait_p50, abs=5.0)
    assert split.wait_p95 == pytest.approx(whole.wait_p95, rel=0.1)


def test_a_job_still_waiting_where_its_piece_ends_is_run_to_the_end_not_cut_short() -> None:
    # Two VMs at most for four 20-minute jobs: two of them start after the piece's end.
    records = [job(500 + i, 10.0 * i, 1200.0, LABELS) for i in range(4)]
    config = stack(max=2)
    routed, _ = route_all(config.groups, records)
    until = (T0 + timedelta(minutes=10)).timestamp()
    result = Simulation(config, load_latency(), Options(seed=1)).run_routed(routed, until=until)
    started = [j.started for j in result.jobs]
    assert None not in started and sum(1 for t in started if t is not None and t > until) == 2
    assert result.end == until  # but what is billed after it is the next piece's (which replays these jobs)


def test_a_department_busy_around_the_clock_runs_in_pieces_that_agree_with_one_run() -> None:
    # Offices in every time zone: the load never pauses, so no piece begins at rest; each replays
    # the jobs in flight where it begins, and the figures still agree with one whole run.
    shape = TraceShape(
        days=3, jobs_per_day=400, start=T0, night_share=1.0, weekend_share=1.0, labels=SHAPE.labels, matrix_share=0.02
    )
    records = list(generate(shape, seed=7))
    config, models, prices = stack(), load_latency(), load_prices()
    pieces = cut(route_all(config.groups, records)[0], min_jobs=300, seed=3)
    assert len(pieces) >= 3 and all(piece.lead_in for piece in pieces[1:])
    in_pieces = simulate(config, records, models, Options(seed=3, piece_jobs=300, workers=1))
    whole = figures(simulate(config, records, models, Options(seed=3, split=False)), prices).total
    split = figures(in_pieces, prices).total
    assert in_pieces.pieces == len(pieces)
    assert split.jobs == whole.jobs == len(records) and split.never_started == whole.never_started == 0
    assert split.vm_minutes == pytest.approx(whole.vm_minutes, rel=0.02)
    assert split.wait_p50 == pytest.approx(whole.wait_p50, abs=5.0)
    assert split.wait_p95 == pytest.approx(whole.wait_p95, rel=0.1)
    assert split.vms_created == pytest.approx(whole.vms_created, rel=0.02)


def test_a_piece_that_begins_with_jobs_in_flight_counts_their_vms_once(tmp_path: Path) -> None:
    # 17 hours of one-minute jobs every 15 s, no gap: each piece begins with about 120 jobs in
    # flight. With fixed latencies the replay puts the cloud where the whole run has it, so the
    # figures are the whole run's, not the replayed jobs' VMs twice.
    records = [job(90_000 + i, 15.0 * i, 60.0) for i in range(4000)]
    models = load_latency(latency_override(tmp_path, create=40.0, boot=20.0, startup=5.0, delete=10.0))
    pieces = cut(route_all(stack().groups, records)[0], min_jobs=1000, seed=1)
    assert len(pieces) == 4 and all(len(piece.lead_in) > 100 for piece in pieces[1:])
    whole_figures = figures(simulate(stack(), records, models, Options(seed=1, split=False)), load_prices())
    split_figures = figures(simulate(stack(), records, models, Options(seed=1, piece_jobs=1000)), load_prices())
    whole, split = whole_figures.total, split_figures.total
    for figure in ("jobs", "wait_p50", "wait_max", "vm_minutes", "job_minutes", "vms_created", "cost"):
        assert getattr(split, figure) == pytest.approx(getattr(whole, figure)), figure
    # GitHub requests too, within a runner listing where a piece begins (18,112 against 18,113).
    assert split_figures.github_requests == pytest.approx(whole_figures.github_requests, abs=len(pieces))
    assert split_figures.github_peak_hour == pytest.approx(whole_figures.github_peak_hour, abs=len(pieces))
