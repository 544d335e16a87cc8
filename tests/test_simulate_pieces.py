"""A long history runs in pieces cut at its quiet gaps, in parallel processes, with the figures of one run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest

from scaler.history.generate import TraceShape, generate
from scaler.history.record import JobRecord
from scaler.simulate.engine import WARM_UP, Options, RunResult, Simulation, route_all
from scaler.simulate.figures import figures
from scaler.simulate.models import load_latency, load_prices
from scaler.simulate.pieces import IN_FLIGHT_AFTER, cut, simulate
from tests.simkit import LABELS, T0, job, stack

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


def test_a_history_is_cut_only_where_no_job_is_in_flight_for_longer_than_the_warm_up() -> None:
    # Two bursts of 30 jobs an hour apart are one piece (a job is in flight for half an hour after
    # it ends); a third a day later is another.
    records = [job(100 + i, 60.0 * i, 300.0, LABELS) for i in range(30)]
    records += [job(200 + i, 3600.0 + 60.0 * i, 300.0, LABELS) for i in range(30)]
    records += [job(300 + i, 86_400.0 + 60.0 * i, 300.0, LABELS) for i in range(30)]
    routed, _ = route_all(stack().groups, records)
    pieces = cut(routed, min_jobs=20, seed=1)
    assert [len(p.jobs) for p in pieces] == [60, 30]
    first_of_second = pieces[1].jobs[0][0].created_at.timestamp()
    assert pieces[0].until == first_of_second - WARM_UP
    last_busy = max(r.created_at.timestamp() + 300.0 for r, _ in pieces[0].jobs) + IN_FLIGHT_AFTER
    assert pieces[0].until >= last_busy
    assert pieces[1].until is None  # the last piece drains as a whole run does
    assert len({p.seed for p in pieces}) == 2  # each piece draws its own latencies
    # A piece is never smaller than asked: with 40 jobs a piece, the third burst stays with the rest.
    assert [len(p.jobs) for p in cut(routed, min_jobs=40, seed=1)] == [90]


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
    # The warm-up repeats at each cut: a few VMs more at most, a minute or two of boot each.
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
    assert result.end >= max(j.started + j.duration for j in result.jobs if j.started is not None)
