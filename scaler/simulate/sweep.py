"""Run one configuration or many; many run in parallel processes, one simulation each.

Each worker process reads the history and the models once (its initializer)
and then simulates whole configurations, so a sweep of 20 uses every core and
ships back only figures and plot series, never the month of jobs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaler.config import parse_stack_config
from scaler.history.record import JobRecord, read_history
from scaler.simulate.engine import Options, RunResult
from scaler.simulate.figures import Figures, figures
from scaler.simulate.models import LatencyModels, PriceTable, load_latency, load_prices
from scaler.simulate.pieces import simulate
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
    seconds: float  # wall-clock time the simulation took (for the bench)


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
    import time

    records, latency, prices = loaded if loaded is not None else _loaded  # type: ignore[misc]
    config = parse_stack_config(raw, source)
    began = time.perf_counter()
    result = simulate(config, records, latency, options)
    took = time.perf_counter() - began
    return Outcome(label, figures(result, prices), series(result), took), result


def _worker(raw: dict[str, Any], source: str, label: str, options: Options) -> Outcome:
    # The sweep already has a process per core: this configuration's pieces run one after another.
    return run_one(raw, source, label, replace(options, workers=1))[0]


def run_many(
    configs: Sequence[tuple[dict[str, Any], str]], source: str, inputs: Inputs, options: Options, workers: int | None
) -> list[Outcome]:
    """Simulate each (config block, label) in its own process; results in the order given."""
    workers = max(1, min(len(configs), workers or os.cpu_count() or 1))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(inputs,)) as pool:
        futures = [pool.submit(_worker, raw, source, label, options) for raw, label in configs]
        return [f.result() for f in futures]
