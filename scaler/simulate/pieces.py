"""``simulate``: a long history in pieces, simulated in parallel processes and joined.

A month of a department's jobs runs in pieces of a few thousand jobs, one
process per core, each by the real agent
(:class:`~scaler.simulate.engine.Simulation`). A piece begins where the fewest
jobs are in flight, ideally none (a quiet night or weekend), and first replays
the jobs still in flight there, from :data:`~scaler.simulate.engine.WARM_UP`
before the first of them: its pools fill, its standby pools are there, and its
cloud, GitHub and agent are then in the state a whole run would be in. That
replay was counted by the piece before, so each piece counts only its window,
from where it begins to where the next one begins (:mod:`scaler.simulate.tally`);
a job still waiting where its piece ends is run to its start and end there.

What a piece does not carry over from the one before: the agent's memory of
jobs that were over before it began (its VMs are named after jobs, which do not
repeat), the phase of its reconcile passes, the JIT budget's last minute, and
its random draws (each piece has its own seed, derived from the run's). The
replayed jobs draw their latencies afresh, so where one waited long in the
piece before it may not here. A run in pieces therefore agrees with a run in
one piece within the latency model's noise, not draw for draw;
``bench/simulate.py`` measures both. Where the pieces begin depends on the
history alone, never on the number of processes: the same seed gives the same
figures on any machine.
"""

from __future__ import annotations

import bisect
import heapq
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace

from scaler.config import StackConfig
from scaler.history.record import JobRecord
from scaler.simulate.cloud import Usage
from scaler.simulate.engine import (
    NOTHING_TO_SIMULATE,
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
Progress = Callable[[int, int], None]  # (jobs simulated so far, jobs in all): called as pieces are done


@dataclass(frozen=True)
class Piece:
    jobs: Sequence[Routed]  # the jobs it counts (created in its window)
    lead_in: Sequence[Routed]  # earlier jobs in flight where it begins: replayed, counted by the piece before
    begins: float | None  # where its window begins (None: the first piece, which counts from its warm-up)
    until: float | None  # where the next piece begins (None: the last piece, which drains)
    seed: int


def cut(routed: Sequence[Routed], min_jobs: int, seed: int) -> list[Piece]:
    """Split jobs (in order of creation) into pieces of ``min_jobs`` to ``2 * min_jobs`` jobs (or one piece).

    Each piece after the first begins at the creation of a job before which the
    fewest jobs are in flight (:data:`IN_FLIGHT_AFTER`), the earliest such job
    if several: at a quiet gap none are, and the piece replays nothing.
    """
    created = [epoch(record.created_at) for record, _ in routed]
    over: list[float] = []
    for (record, _), at in zip(routed, created, strict=True):
        ran = record.duration
        assert ran is not None  # routed jobs ran (route_all)
        over.append(at + ran.total_seconds() + IN_FLIGHT_AFTER)
    in_flight: list[int] = []  # jobs before each one still in flight at its creation
    ends: list[float] = []
    for at, end in zip(created, over, strict=True):
        while ends and ends[0] <= at:
            heapq.heappop(ends)
        in_flight.append(len(ends))
        heapq.heappush(ends, end)
    starts = [0]
    while (low := starts[-1] + min_jobs) <= (high := min(starts[-1] + 2 * min_jobs, len(routed) - min_jobs)):
        starts.append(min(range(low, high + 1), key=lambda i: (in_flight[i], i)))
    longest = max((end - at for at, end in zip(created, over, strict=True)), default=0.0)  # a job's stretch in flight
    pieces: list[Piece] = []
    for index, (first, after) in enumerate(zip(starts, [*starts[1:], len(routed)], strict=True)):
        begins = created[first] if index else None
        # Only jobs created at most the longest stretch in flight before it can still be in flight.
        earliest = bisect.bisect_left(created, created[first] - longest) if index else first
        lead_in = [routed[j] for j in range(earliest, first) if over[j] > created[first]]
        until = created[after] if after < len(routed) else None
        piece_seed = seed if len(starts) == 1 else random.Random(f"{seed}/{index}").randrange(2**32)
        pieces.append(Piece(routed[first:after], lead_in, begins, until, piece_seed))
    return pieces


@dataclass(frozen=True)
class Split:
    """A configuration's history, routed and cut into pieces."""

    pieces: list[Piece]
    repositories: list[str]  # the organisation's, for the priority classes' runner groups
    unrouted: int  # jobs that cannot be simulated (never ran, or fit no group)


def split(config: StackConfig, records: Sequence[JobRecord], options: Options) -> Split:
    """Route the history to the configuration's groups and cut it (:func:`cut`; one piece unless ``options.split``)."""
    routed, unrouted = route_all(config.groups, records)
    if not routed:
        raise ValueError(NOTHING_TO_SIMULATE)
    whole = [Piece(routed, (), None, None, options.seed)]
    pieces = cut(routed, options.piece_jobs, options.seed) if options.split else whole
    return Split(pieces, list(dict.fromkeys(record.repository for record, _ in routed)), unrouted)


def largest_first(pieces: Sequence[Piece]) -> list[int]:
    """The pieces' indexes, largest first: the last piece to start is a small one, no process idles long."""
    return sorted(range(len(pieces)), key=lambda i: -(len(pieces[i].jobs) + len(pieces[i].lead_in)))


def simulate_piece(
    config: StackConfig, models: LatencyModels, options: Options, piece: Piece, repositories: Sequence[str]
) -> RunResult:
    simulation = Simulation(config, models, replace(options, seed=piece.seed))
    return simulation.run_routed(piece.jobs, 0, piece.until, repositories, piece.lead_in, piece.begins)


def join(results: Sequence[RunResult], unrouted: int) -> RunResult:
    """One result from consecutive pieces' (each piece's window ends where the next one's begins)."""
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
        request_times=[t for r in results for t in r.request_times],
        unchanged_times=[t for r in results for t in r.unchanged_times],
        jit_refused=sum(r.jit_refused for r in results),
        unrouted=unrouted,
        warm_seconds=dict(warm),
        steps=sum(r.steps for r in results),
        vm_log=[entry for r in results for entry in r.vm_log],
        events=[event for r in results for event in r.events],
        pieces=len(results),
        replayed=sum(r.replayed for r in results),
    )


def simulate(
    config: StackConfig,
    records: Sequence[JobRecord],
    models: LatencyModels,
    options: Options | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Simulate the history: in pieces, in parallel (:func:`cut`), unless ``options.split`` is off.

    ``progress(jobs done, jobs in all)`` is called as each piece is done.
    """
    options = options if options is not None else Options()
    if config.kind != "department":
        raise ValueError("simulate a department stack, not the hub")
    parts = split(config, records, options)
    pieces, repositories = parts.pieces, parts.repositories
    total, done = sum(len(piece.jobs) for piece in pieces), 0
    workers = min(len(pieces), options.workers or os.cpu_count() or 1)
    results: dict[int, RunResult] = {}
    if workers <= 1:
        for index, piece in enumerate(pieces):
            results[index] = simulate_piece(config, models, options, piece, repositories)
            done += len(piece.jobs)
            if progress is not None:
                progress(done, total)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(simulate_piece, config, models, options, pieces[i], repositories): i
                for i in largest_first(pieces)
            }
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                done += len(pieces[index].jobs)
                if progress is not None:
                    progress(done, total)
    return join([results[i] for i in range(len(pieces))], parts.unrouted)
