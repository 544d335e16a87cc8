"""Run one configuration or many; many share one pool of processes, a piece of a history per task.

Every configuration's history is cut into pieces (:mod:`scaler.simulate.pieces`)
and each piece is a task, so a sweep keeps every core busy to its end, even with
fewer configurations than cores. Each worker process reads the history and the
models once (its initializer) and routes and cuts a configuration's history
once; tasks ship back a piece's result without its event log, never the month
of jobs. A configuration's figures are the same whether it runs alone or in a
sweep.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaler.config import StackConfig, parse_stack_config
from scaler.history.record import JobRecord, read_history
from scaler.simulate.engine import Options, RunResult
from scaler.simulate.figures import Figures, figures
from scaler.simulate.models import LatencyModels, PriceTable, load_latency, load_prices
from scaler.simulate.pieces import Progress, Split, join, largest_first, simulate, simulate_piece, split
from scaler.simulate.report import Series, series


@dataclass(frozen=True)
class Inputs:
    history: Path
    skip_bad: bool
    latency: Path | None
    prices: Path | None


@dataclass(frozen=True)
class Outcome:
    label: str
    figures: Figures
    series: Series
    seconds: float  # wall-clock time its simulation took (in a sweep: its pieces' times added up)


_loaded: tuple[list[JobRecord], LatencyModels, PriceTable] | None = None


def load(inputs: Inputs) -> tuple[list[JobRecord], LatencyModels, PriceTable]:
    report = read_history(inputs.history, skip_bad=inputs.skip_bad)
    return report.records, load_latency(inputs.latency), load_prices(inputs.prices)


def _init(inputs: Inputs) -> None:
    global _loaded
    _loaded = load(inputs)


def run_one(
    raw: dict[str, Any], source: str, label: str, options: Options, loaded: Any = None, progress: Progress | None = None
) -> tuple[Outcome, RunResult]:
    records, latency, prices = loaded if loaded is not None else _loaded  # type: ignore[misc]
    config = parse_stack_config(raw, source)
    began = time.perf_counter()
    result = simulate(config, records, latency, options, progress)
    took = time.perf_counter() - began
    return Outcome(label, figures(result, prices), series(result), took), result


# This worker's configurations, each split once (by index in the sweep): its tasks are their pieces.
_splits: dict[int, tuple[StackConfig, Split]] = {}


def _piece(index: int, raw: dict[str, Any], source: str, options: Options, piece: int) -> tuple[RunResult, float]:
    assert _loaded is not None
    records, latency, _ = _loaded
    if index not in _splits:
        config = parse_stack_config(raw, source)
        _splits[index] = (config, split(config, records, options))
    config, parts = _splits[index]
    began = time.perf_counter()
    result = simulate_piece(config, latency, options, parts.pieces[piece], parts.repositories)
    # The event log is most of a piece's result and no figure reads it (the agreement tests run alone).
    return replace(result, events=[]), time.perf_counter() - began


def run_many(
    configs: Sequence[tuple[dict[str, Any], str]],
    source: str,
    inputs: Inputs,
    options: Options,
    workers: int | None,
    progress: Progress | None = None,
    loaded: tuple[list[JobRecord], LatencyModels, PriceTable] | None = None,
) -> list[Outcome]:
    """Simulate each (config block, label), their pieces in parallel processes; results in the order given.

    ``loaded``: the inputs already read (the CLI has read them), else read here; the workers read them anyway.
    """
    records, _, prices = loaded if loaded is not None else load(inputs)
    splits = [split(parse_stack_config(raw, source), records, options) for raw, _ in configs]
    # A configuration's pieces one after another, largest first: its result is joined (and its pieces'
    # results dropped) while the next configuration's run, and the last tasks of all are small ones.
    tasks = [(index, piece) for index, parts in enumerate(splits) for piece in largest_first(parts.pieces)]
    workers = max(1, min(len(tasks), workers or os.cpu_count() or 1))
    left = [len(parts.pieces) for parts in splits]
    total, done = sum(len(piece.jobs) for parts in splits for piece in parts.pieces), 0
    results: dict[tuple[int, int], tuple[RunResult, float]] = {}
    outcomes: dict[int, Outcome] = {}
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(inputs,)) as pool:
        futures = {pool.submit(_piece, i, configs[i][0], source, options, piece): (i, piece) for i, piece in tasks}
        for future in as_completed(futures):
            index, piece = futures[future]
            results[index, piece] = future.result()
            done += len(splits[index].pieces[piece].jobs)
            if progress is not None:
                progress(done, total)
            left[index] -= 1
            if not left[index]:
                pieces = [results.pop((index, p)) for p in range(len(splits[index].pieces))]
                result = join([r for r, _ in pieces], splits[index].unrouted)
                label = configs[index][1]
                outcomes[index] = Outcome(label, figures(result, prices), series(result), sum(t for _, t in pieces))
    return [outcomes[index] for index in range(len(configs))]
