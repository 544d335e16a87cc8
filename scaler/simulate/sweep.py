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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaler.config import StackConfig, parse_stack_config
from scaler.history.record import JobRecord, read_history
from scaler.simulate.engine import Options, RunResult
from scaler.simulate.figures import Figures, figures
from scaler.simulate.models import LatencyModels, PriceTable, load_latency, load_prices
from scaler.simulate.pieces import Split, join, largest_first, simulate, simulate_piece, split
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
    raw: dict[str, Any], source: str, label: str, options: Options, loaded: Any = None
) -> tuple[Outcome, RunResult]:
    records, latency, prices = loaded if loaded is not None else _loaded  # type: ignore[misc]
    config = parse_stack_config(raw, source)
    began = time.perf_counter()
    result = simulate(config, records, latency, options)
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
    configs: Sequence[tuple[dict[str, Any], str]], source: str, inputs: Inputs, options: Options, workers: int | None
) -> list[Outcome]:
    """Simulate each (config block, label), their pieces in parallel processes; results in the order given."""
    records, _, prices = load(inputs)
    splits = [split(parse_stack_config(raw, source), records, options) for raw, _ in configs]
    # A configuration's pieces one after another, largest first: its result is joined (and its pieces'
    # results dropped) while the next configuration's run, and the last tasks of all are small ones.
    tasks = [(index, piece) for index, parts in enumerate(splits) for piece in largest_first(parts.pieces)]
    workers = max(1, min(len(tasks), workers or os.cpu_count() or 1))
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(inputs,)) as pool:
        futures = {task: pool.submit(_piece, task[0], configs[task[0]][0], source, options, task[1]) for task in tasks}
        for index, ((_, label), parts) in enumerate(zip(configs, splits, strict=True)):
            done = [futures.pop((index, piece)).result() for piece in range(len(parts.pieces))]
            result = join([r for r, _ in done], parts.unrouted)
            outcomes.append(Outcome(label, figures(result, prices), series(result), sum(t for _, t in done)))
    return outcomes
