"""`garo simulate`: what a stack file would have cost, and how long jobs would have waited.

    garo simulate --history jobs.jsonl Pulumi.web.yaml
    garo simulate --history jobs.jsonl Pulumi.web.yaml --set 'garo:groups[0].warmPool.size=0,1,2,4' \\
        --target-p95 45s --report out/

Exit codes: 0 done (and the target met, if one was given); 1 no configuration
meets the target, or the history has bad lines (without --skip-bad); 2 bad
input (stack, --set, models, prices) — nothing was simulated.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from scaler.config import ConfigError, StackConfig, load_stack_file
from scaler.history.export import PROGRESS_EVERY
from scaler.history.record import HistoryError, read_history
from scaler.simulate.engine import CLOUD_MODELS, Options, RunResult
from scaler.simulate.figures import PRICE_CLOUDS, duration_text, table
from scaler.simulate.models import ModelError, PriceTable, load_latency, load_prices
from scaler.simulate.report import plot_cost_vs_p95, plot_wait_vs_vms, write_json
from scaler.simulate.sweep import Inputs, Outcome, run_many, run_one
from scaler.simulate.whatif import (
    SetError,
    Variant,
    cheapest_meeting,
    pareto,
    parse_duration,
    parse_set,
    stack_diff,
    variants,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _check_prices(config: StackConfig, prices: PriceTable, label: str) -> None:
    cloud = PRICE_CLOUDS.get(config.cloud, config.cloud)
    for group in config.groups:
        try:
            prices.hourly(cloud, config.region, group.machine_type, group.spot)
        except KeyError as exc:
            _fail(f"{label}: group {group.name}: {exc.args[0]} (give one with --prices FILE)")


def _summary_line(o: Outcome, mark: str = " ") -> str:
    t = o.figures.total
    return (
        f"{mark} {o.label:<60} cost {t.cost:>10.2f}  p95 {duration_text(t.wait_p95):>6}  "
        f"p50 {duration_text(t.wait_p50):>6}  max {duration_text(t.wait_max):>6}  VM/job {t.ratio:.2f}"
    )


@click.command()
@click.argument("stack_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--history",
    "history",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Job history (garo history export|import|generate).",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Sweep a setting, e.g. 'garo:groups[0].warmPool.size=0,1,2,4' (repeatable: cartesian product).",
)
@click.option("--target-p95", "target", help="Pick the cheapest configuration whose p95 wait is within this (45s, 2m).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of a table.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write figures.json, plots and the stack diff here.",
)
@click.option(
    "--latency",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Latency model override (scaler/simulate/data/latency.yaml's shape).",
)
@click.option(
    "--prices",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Price table override (scaler/simulate/data/prices.yaml's shape).",
)
@click.option("--cloud-model", type=click.Choice(["gce", "ec2"]), help="Latency model (default: from garo:cloud).")
@click.option(
    "--jit-per-minute",
    default=180,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="GitHub's JIT config budget.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Random seed for latencies and GitHub's choices.")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Processes for a sweep's configurations, or for one long history's pieces (default: one per core).",
)
@click.option(
    "--whole",
    is_flag=True,
    help="Simulate the history in one piece, not in pieces on a process per core (slower; see docs/simulate.md).",
)
@click.option("--skip-bad", is_flag=True, help="Simulate the good lines of a history with bad ones (still listed).")
def simulate(
    stack_file: Path,
    history: Path,
    sets: tuple[str, ...],
    target: str | None,
    as_json: bool,
    report_dir: Path | None,
    latency: Path | None,
    prices: Path | None,
    cloud_model: str | None,
    jit_per_minute: int,
    seed: int,
    workers: int | None,
    whole: bool,
    skip_bad: bool,
) -> None:  # fmt: skip
    """Replay a job history through the real agent on a virtual clock (docs/simulate.md)."""
    try:
        base = load_stack_file(stack_file)
    except ConfigError as exc:
        _fail(str(exc))
    text = stack_file.read_text(encoding="utf-8")
    raw_config: dict[str, Any] = dict(yaml.safe_load(text)["config"])
    target_s: float | None = None
    if target is not None:
        try:
            target_s = parse_duration(target)
        except ValueError as exc:
            _fail(f"--target-p95: {exc}")
    try:
        options = [parse_set(s, raw_config) for s in sets]
        chosen_variants = variants(raw_config, options, str(stack_file))
    except SetError as exc:
        _fail(str(exc))
    try:
        models, table_ = load_latency(latency), load_prices(prices)
    except ModelError as exc:
        _fail(str(exc))
    model_name = cloud_model or CLOUD_MODELS.get(base.cloud, base.cloud)
    if model_name not in models.clouds:
        _fail(f"no latency model for {model_name!r}; choose one with --cloud-model")
    for v in chosen_variants:
        _check_prices(v.config, table_, v.label)
    try:
        report = read_history(history, skip_bad=skip_bad)
    except HistoryError as exc:
        _fail(str(exc), 1)
    for line in report.error_lines():
        click.echo(line, err=True)
    opts = Options(seed=seed, jit_per_minute=jit_per_minute, cloud_model=model_name, split=not whole, workers=workers)
    outcomes, single = _run(chosen_variants, raw_config, stack_file, report.records, models, table_, history, opts,
                            skip_bad, latency, prices, workers)  # fmt: skip
    _output(outcomes, single, chosen_variants, target_s, text, stack_file, as_json, report_dir, len(sets) > 0)


def _run(
    chosen: list[Variant], raw: dict[str, Any], stack_file: Path, records: Any, models: Any, prices: PriceTable,
    history: Path, opts: Options, skip_bad: bool, latency: Path | None, price_file: Path | None, workers: int | None,
) -> tuple[list[Outcome], RunResult | None]:  # fmt: skip
    progress, loaded = ProgressLines(), (records, models, prices)
    if len(chosen) == 1:
        try:
            outcome, result = run_one(chosen[0].raw, str(stack_file), chosen[0].label, opts, loaded, progress)
        except ValueError as exc:
            _fail(f"{stack_file}: {exc}", 1)
        return [outcome], result
    inputs = Inputs(history, skip_bad, latency, price_file)
    click.echo(f"simulating {len(chosen)} configurations in parallel processes...", err=True)
    configs = [(v.raw, v.label) for v in chosen]
    return run_many(configs, str(stack_file), inputs, opts, workers, progress, loaded), None


class ProgressLines:
    """How far a long simulation is, on stderr, as `garo history export` shows it: a line every few seconds."""

    every = PROGRESS_EVERY

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < total and now - self.last >= self.every:
            click.echo(f"simulated {done:,} of {total:,} jobs ({done / total:.0%})", err=True)
            self.last = now


def _output(
    outcomes: list[Outcome], single: RunResult | None, chosen_variants: list[Variant], target_s: float | None,
    text: str, stack_file: Path, as_json: bool, report_dir: Path | None, swept: bool,
) -> None:  # fmt: skip
    points = [(o.figures.total.cost, o.figures.total.wait_p95) for o in outcomes]
    front = pareto(points)
    chosen = cheapest_meeting(points, target_s) if target_s is not None else None
    diff = ""
    if chosen is not None and chosen_variants[chosen].changes:
        diff = stack_diff(text, chosen_variants[chosen].changes, stack_file.name)
    data = {
        "configurations": [{"label": o.label, **o.figures.to_json()} for o in outcomes],
        "pareto_front": [outcomes[i].label for i in front],
        "target_p95_seconds": target_s,
        "chosen": outcomes[chosen].label if chosen is not None else None,
        "diff": diff or None,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif not swept:
        click.echo(table(outcomes[0].figures))
    else:
        click.echo("configurations (total cost, waits queued -> started):")
        for i, o in enumerate(outcomes):
            click.echo(_summary_line(o, "*" if i in front else " "))
        click.echo("\nPareto front (cost against p95 wait; * above), cheapest first:")
        for i in front:
            click.echo(_summary_line(outcomes[i]))
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        write_json(report_dir / "figures.json", data)
        shown = outcomes[chosen if chosen is not None else 0]
        plot_wait_vs_vms(shown.series, f"{stack_file.name}: {shown.label}", report_dir / "wait-vs-vms.png")
        short = [", ".join(str(value) for _, value in v.changes) or "as is" for v in chosen_variants]
        keys = ", ".join(dict.fromkeys(label.rsplit("=", 1)[0] for label in chosen_variants[0].label.split(", ")))
        plot_cost_vs_p95(
            points,
            short,
            front,
            chosen,
            outcomes[0].figures.currency,
            report_dir / "cost-vs-p95.png",
            target_s,
            f"{stack_file.name}: cost against p95 wait" + (f" (points: {keys})" if swept else ""),
        )
        if diff:
            (report_dir / "stack.diff").write_text(diff, encoding="utf-8")
        if not as_json:
            click.echo(
                f"\nreport: {report_dir}/ (figures.json, wait-vs-vms.png, cost-vs-p95.png{', stack.diff' if diff else ''})"
            )
    if target_s is None:
        return
    if chosen is None:
        best = min(range(len(outcomes)), key=lambda i: points[i][1])
        _fail(f"\nno configuration meets p95 <= {duration_text(target_s)}; the lowest p95 is "
              f"{duration_text(points[best][1])} ({outcomes[best].label})", 1)  # fmt: skip
    if not as_json:
        click.echo(f"\ncheapest configuration with p95 <= {duration_text(target_s)}: {outcomes[chosen].label}")
        click.echo(diff if diff else "(the stack file as it is: no change needed)")
