"""``simulate``: a long history in pieces: cut at quiet gaps, simulated in parallel processes, joined.

A month of a department's jobs is mostly working days with quiet nights and
weekends between them. Where no job is in flight for longer than the warm-up,
the department is at rest: no job waits or runs, every job's VM is gone, only
the pools are left. Pieces cut there are simulated independently, each by the
real agent (:class:`~scaler.simulate.engine.Simulation`), one process per core,
and their results joined; a piece starts :data:`~scaler.simulate.engine.WARM_UP`
before its first job (its warm pool fills, its standby pools are there as in a
running department) and ends where the next piece starts.

What a piece does not carry over from the one before: the agent's memory of
earlier jobs (its VMs are named after jobs, which do not repeat), the phase of
its reconcile passes, the JIT budget's last minute (the gap is longer), and its
random draws (each piece has its own seed, derived from the run's). So a run
in pieces agrees with a run in one piece within the latency model's noise, not
draw for draw; ``bench/simulate.py`` measures both. Where the cuts fall depends
on the history alone, never on the number of processes: the same seed gives the
same figures on any machine. A department busy around the clock has no such
gap and runs in one piece.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from scaler.config import StackConfig
from scaler.history.record import JobRecord
from scaler.simulate.cloud import Usage
from scaler.simulate.engine import (
    NOTHING_TO_SIMULATE,
    WARM_UP,
    Options,
    Routed,
    RunResult,
    Simulation,
    epoch,
    route_all,
)
from scaler.simulate.models import LatencyModels

# A job counts as in flight from its creation until this long after it would have ended had it
# started at once: its wait, its VM's boot and runner start-up, and the VM's deletion fit in it.
IN_FLIGHT_AFTER = 1800.0


@dataclass(frozen=True)
class Piece:
    jobs: Sequence[Routed]
    until: float | None  # where the next piece starts (None: the last piece, which drains)
    seed: int


def cut(routed: Sequence[Routed], min_jobs: int, seed: int) -> list[Piece]:
    """Split jobs (in order of creation) at quiet gaps into pieces of at least ``min_jobs`` jobs.

    A gap qualifies when the next job is created at least the warm-up after
    every earlier job stopped being in flight (:data:`IN_FLIGHT_AFTER`): the
    next piece's warm-up then starts with the department at rest.
    """
    starts = [0]
    busy_until = float("-inf")
    for i, (record, _) in enumerate(routed):
        created = epoch(record.created_at)
        if i - starts[-1] >= min_jobs and len(routed) - i >= min_jobs and created - WARM_UP >= busy_until:
            starts.append(i)
        assert record.started_at is not None and record.completed_at is not None
        ran = max(0.0, (record.completed_at - record.started_at).total_seconds())
        busy_until = max(busy_until, created + ran + IN_FLIGHT_AFTER)
    ends = starts[1:] + [len(routed)]
    pieces: list[Piece] = []
    for index, (first, after) in enumerate(zip(starts, ends, strict=True)):
        until = epoch(routed[after][0].created_at) - WARM_UP if after < len(routed) else None
        piece_seed = seed if len(starts) == 1 else random.Random(f"{seed}/{index}").randrange(2**32)
        pieces.append(Piece(routed[first:after], until, piece_seed))
    return pieces


def _simulate_piece(
    config: StackConfig, models: LatencyModels, options: Options, piece: Piece, repositories: Sequence[str]
) -> RunResult:
    simulation = Simulation(config, models, replace(options, seed=piece.seed))
    return simulation.run_routed(piece.jobs, 0, piece.until, repositories)


def run_pieces(
    config: StackConfig, models: LatencyModels, options: Options, routed: Sequence[Routed], unrouted: int
) -> RunResult:
    """Simulate the jobs in pieces (:func:`cut`), in parallel processes when there are several."""
    pieces = cut(routed, options.piece_jobs, options.seed) if options.split else [Piece(routed, None, options.seed)]
    repositories = list(dict.fromkeys(record.repository for record, _ in routed))
    workers = min(len(pieces), options.workers or os.cpu_count() or 1)
    if workers <= 1:
        results = [_simulate_piece(config, models, options, piece, repositories) for piece in pieces]
    else:
        # Largest first, so the last piece to start is a small one (no process idles long at the end).
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i].jobs))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {i: pool.submit(_simulate_piece, config, models, options, pieces[i], repositories) for i in order}
            results = [futures[i].result() for i in range(len(pieces))]
    return join(results, unrouted)


def join(results: Sequence[RunResult], unrouted: int) -> RunResult:
    """One result from consecutive pieces' (each piece's run ends where the next one's begins)."""
    if len(results) == 1:
        return replace(results[0], unrouted=unrouted)
    usage = Usage()
    warm: defaultdict[str, float] = defaultdict(float)
    github_calls: Counter[str] = Counter()
    for r in results:
        for group, seconds in r.usage.vm_seconds.items():
            usage.vm_seconds[group] += seconds
        for group, seconds in r.usage.standby_seconds.items():
            usage.standby_seconds[group] += seconds
        usage.calls.update(r.usage.calls)
        usage.created.update(r.usage.created)
        usage.capacity_errors += r.usage.capacity_errors
        usage.preemptions += r.usage.preemptions
        usage.active_series += r.usage.active_series
        usage.log += r.usage.log
        for group, seconds in r.warm_seconds.items():
            warm[group] += seconds
        github_calls.update(r.github_calls)
    return replace(
        results[0],
        end=results[-1].end,
        jobs=[job for r in results for job in r.jobs],
        usage=usage,
        github_calls=dict(github_calls),
        jit_times=[t for r in results for t in r.jit_times],
        jit_refused=sum(r.jit_refused for r in results),
        unrouted=unrouted,
        warm_seconds=dict(warm),
        steps=sum(r.steps for r in results),
        vm_log=[entry for r in results for entry in r.vm_log],
        events=[event for r in results for event in r.events],
        pieces=len(results),
    )


def simulate(
    config: StackConfig, records: Sequence[JobRecord], models: LatencyModels, options: Options | None = None
) -> RunResult:
    """Simulate the history: in pieces at its quiet gaps, in parallel, unless ``options.split`` is off."""
    options = options if options is not None else Options()
    if config.kind != "department":
        raise ValueError("simulate a department stack, not the hub")
    routed, unrouted = route_all(config.groups, records)
    if not routed:
        raise ValueError(NOTHING_TO_SIMULATE)
    return run_pieces(config, models, options, routed, unrouted)
