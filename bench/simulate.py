"""`garo simulate` benchmarks: its speed on a month of 100,000 jobs, and Garo's own policy on a month of ~50,000.

Speed: ``garo history generate --days 30 --jobs-per-day 3334 --seed 1`` (about
100,000 jobs), simulated through the real agent with the shipped GCE model, as
`garo simulate` runs it (in pieces, a process per core) and
in one piece (``--whole``); wall-clock and CPU time, and both runs' figures.
The one-piece run also splits its CPU time by what woke the agent for each
step (a reconcile pass, a queued job, ...) and the simulated world's share
(cloud, GitHub, bus, clock): where a month's time goes.

Policy: ``garo history generate --days 30 --jobs-per-day 1700 --seed 1`` (about
50,000 jobs) through three stacks, in parallel processes: no pool, a warm pool
in office hours, a suspended standby pool. For each: p95 wait, and VM-minutes
against 1.05 x (job-minutes + boot and teardown minutes) + warm-pool minutes,
where boot and teardown minutes are VMs created x the model's mean create +
boot + runner start-up + delete.

    .venv/bin/python bench/simulate.py [--part speed|policy|all] [--write-docs]

With --write-docs it adds a dated entry to docs/benchmarks.md (bench/docs.py).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.docs import add_entry, heading  # noqa: E402
from scaler.config import parse_stack_config  # noqa: E402
from scaler.history.record import read_history  # noqa: E402
from scaler.simulate.engine import Options, RunResult, Simulation  # noqa: E402
from scaler.simulate.figures import Figures, figures  # noqa: E402
from scaler.simulate.models import Distribution, LatencyModels, load_latency, load_prices  # noqa: E402
from scaler.simulate.pieces import simulate, split  # noqa: E402
from scaler.simulate.sweep import Inputs, run_many  # noqa: E402

GROUPS = [  # the generator's default label mix: small 60 %, medium 25 %, large 10 %, gpu 5 %
    ("small", "e2-standard-4", 150),
    ("medium", "e2-standard-4", 80),
    ("large", "n2-standard-16", 40),
    ("gpu", "n2-standard-16", 20),
]
OFFICE = "Mon-Fri 07:00-19:00 UTC"  # the generator's office hours (a bell around 13:00 UTC)


def stack(small_warm: int = 0, small_standby: int = 0) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for name, machine, maximum in GROUPS:
        group: dict[str, Any] = {"name": name, "labels": ["self-hosted", "linux", "x64", name]}
        group |= {"machineType": machine, "max": maximum}
        if name == "small" and small_warm:
            group["warmPool"] = {"size": small_warm, "schedule": OFFICE}
        if name == "small" and small_standby:
            group["standbyPool"] = {"size": small_standby, "mode": "suspended"}
        groups.append(group)
    return {
        "gcp:project": "acme-ci-bench",
        "garo:kind": "department",
        "garo:cloud": "gcp",
        "garo:region": "us-central1",
        "garo:department": "bench",
        "garo:github": {"org": "acme"},
        "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:groups": groups,
    }


def generate(directory: Path, days: int, per_day: int) -> tuple[Path, str]:
    out = directory / f"history-{days}d-{per_day}.jsonl"
    args = ["garo", "history", "generate", "--days", str(days), "--jobs-per-day", str(per_day), "--seed", "1"]
    subprocess.run([str(Path(sys.executable).parent / "garo"), *args[1:], "--out", str(out)], check=True)
    return out, " ".join(args)


def mean(d: Distribution) -> float:
    return d.median * math.exp(d.sigma**2 / 2) if d.kind == "lognormal" else d.median


def _timed(config: Any, records: Any, options: Options, run: Callable[..., RunResult] = simulate) -> dict[str, Any]:
    """One simulation's wall-clock time, CPU time (its worker processes' included) and figures.

    ``run`` is :func:`scaler.simulate.pieces.simulate` or a stand-in with its signature.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run(config, records, load_latency(), options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {
        "wall": wall,
        "cpu": cpu,
        "steps": result.steps,
        "pieces": result.pieces,
        "replayed": result.replayed,
        "figures": figures(result, load_prices()),
    }


# What woke the agent for a step, in the order a step is filed under (the first that applies: _cause).
CAUSES = ("a reconcile pass", "a job queued", "a job completed", "a job started (in_progress alone)", "no message")


# Bands of how many VMs (any state) the department had when a step began: (lowest, label).
VM_BANDS = ((0, "under 25"), (25, "25-49"), (50, "50-99"), (100, "100-149"), (150, "150 or more"))


def _band(vms: int) -> int:
    return max(i for i, (lowest, _) in enumerate(VM_BANDS) if vms >= lowest)


def _cause(reconciles: bool, pulled: set[str]) -> str:
    if reconciles:
        return CAUSES[0]
    if "queued" in pulled:
        return CAUSES[1]
    if "completed" in pulled:
        return CAUSES[2]
    return CAUSES[3] if "in_progress" in pulled else CAUSES[4]


def _timed_whole(config: Any, records: Any, options: Options) -> dict[str, Any]:
    """:func:`_timed` for one piece, run as `garo simulate --whole` runs it, with each agent step timed by its cause.

    A step is filed under the first of :data:`CAUSES` that applies: its reconcile
    pass was due, or the messages it pulled; "no message" steps are the agent's
    own re-checks (held jobs, a VM that became usable, a JIT config still owed,
    a lease running out). Each step is also filed under how many VMs the
    department had when it began (:data:`VM_BANDS`): what a step costs beyond
    the same kind of step on a near-empty fleet is the agent's per-VM work.
    Timing a step costs two clock reads and a count; it changes nothing that is
    simulated.
    """
    cpu_by: collections.defaultdict[tuple[str, int], float] = collections.defaultdict(float)
    steps_by = collections.Counter[tuple[str, int]]()

    def run(config: Any, records: Any, models: LatencyModels, options: Options) -> RunResult:
        parts = split(config, records, options)
        (piece,) = parts.pieces
        simulation = Simulation(config, models, options)
        agent, bus = simulation.agent, simulation.bus
        step, pull = agent.step, bus.pull
        pulled: set[str] = set()

        def pull_noting(max_messages: int = 100, timeout: float = 1.0) -> Any:
            messages = pull(max_messages, timeout)
            pulled.update(m.attributes.get("action", "") for m in messages)
            return messages

        vms = simulation.cloud.vms

        def step_timed() -> None:
            pulled.clear()
            reconciles = agent.clock() >= agent.next_reconcile
            band = _band(sum(len(group) for group in vms.values()))
            began = time.process_time()
            step()
            key = (_cause(reconciles, pulled), band)
            cpu_by[key] += time.process_time() - began
            steps_by[key] += 1

        bus.pull = pull_noting  # type: ignore[method-assign]
        agent.step = step_timed  # type: ignore[method-assign]
        return simulation.run_routed(
            piece.jobs, parts.unrouted, piece.until, parts.repositories, piece.lead_in, piece.begins
        )

    timed = _timed(config, records, options, run)
    steps = [[steps_by[cause, band] for band in range(len(VM_BANDS))] for cause in CAUSES]
    cpu = [[cpu_by[cause, band] for band in range(len(VM_BANDS))] for cause in CAUSES]
    return timed | {"steps_by": steps, "cpu_by": cpu}


def speed(directory: Path) -> dict[str, Any]:
    history, command = generate(directory, 30, 3334)
    records = read_history(history).records
    config = parse_stack_config(stack(small_warm=2), "bench stack")
    pieces = _timed(config, records, Options(seed=1))  # as `garo simulate` runs it: in pieces, a process per core
    whole = _timed_whole(config, records, Options(seed=1, split=False))
    return {"generate": command, "jobs": len(records), "pieces": pieces, "whole": whole, "workers": os.cpu_count()}


def policy(directory: Path) -> dict[str, Any]:
    history, command = generate(directory, 30, 1700)
    configs = [(stack(), "no pool"), (stack(small_warm=4), f"warm pool 4 ({OFFICE})"),
               (stack(small_standby=4), "standby pool 4, suspended")]  # fmt: skip
    wall = time.perf_counter()
    outcomes = run_many(configs, "bench stack", Inputs(history, False, None, None), Options(seed=1), workers=2)
    wall = time.perf_counter() - wall
    gce = load_latency().cloud("gce")
    per_vm = (mean(gce.create) + mean(gce.boot) + mean(load_latency().runner_startup) + mean(gce.delete)) / 60
    rows = []
    for o in outcomes:
        t = o.figures.total
        bound = 1.05 * (t.job_minutes + t.vms_created * per_vm) + t.warm_pool_minutes
        rows.append({"label": o.label, "figures": o.figures, "bound": bound, "seconds": o.seconds})
    return {"generate": command, "rows": rows, "per_vm": per_vm, "wall": wall, "jobs": outcomes[0].figures.total.jobs}


def _figures_text(f: Figures) -> str:
    t = f.total
    return (
        f"p50/p95/p99 wait {t.wait_p50:.0f}/{t.wait_p95:.0f}/{t.wait_p99:.0f} s, VM/job minutes {t.ratio:.2f}, "
        f"{t.vms_created:,} VMs, cost {t.cost:,.0f} {f.currency}, at most {f.github_peak_hour:,} GitHub requests in an hour "
        f"({f.github_peak_hour_paid:,} without the listings that repeat an unchanged one)"
    )


def _speed_text(s: dict[str, Any]) -> str:
    pieces, whole = s["pieces"], s["whole"]
    f: Figures = pieces["figures"]
    verdict = "within" if pieces["wall"] <= 60 else "over"
    return (
        f"Speed: `{s['generate']}` gave {s['jobs']:,} jobs over {f.days:.1f} simulated days (4 groups, max "
        f"150/80/40/20, a warm pool of 2 small VMs in office hours, GCE model). As `garo simulate` runs it, in "
        f"{pieces['pieces']} pieces on {min(s['workers'], pieces['pieces'])} processes (each beginning where the "
        f"fewest jobs are in flight; {pieces['replayed']:,} such jobs replayed in all): "
        f"**{pieces['wall']:.0f} s wall-clock** ({verdict} the 60 s goal), {pieces['cpu']:.0f} s CPU in all, "
        f"{pieces['steps']:,} agent steps; {_figures_text(f)}. In one piece (`--whole`): {whole['wall']:.0f} s "
        f"wall-clock, {whole['cpu']:.0f} s CPU, {whole['steps']:,} agent steps, "
        f"{whole['cpu'] / s['jobs'] * 1000:.2f} ms CPU per job; {_figures_text(whole['figures'])}."
        f"\n\n{_causes_text(whole, s['jobs'], s['workers'])}"
    )


def _causes_text(whole: dict[str, Any], jobs: int, workers: int) -> str:
    """The one-piece run's CPU time by what woke the agent and by fleet size, and the simulated world's share."""
    lines = [
        "Where the one-piece run's CPU time went (each agent step filed under what woke it, the first that applies):",
        "",
        "| the agent stepped for | steps | per job | CPU | share | per step |",
        "|---|---|---|---|---|---|",
    ]
    for cause, steps_in, cpu_in in zip(CAUSES, whole["steps_by"], whole["cpu_by"], strict=True):
        steps, cpu = sum(steps_in), sum(cpu_in)
        per_step = f"{cpu / steps * 1e6:,.0f} µs" if steps else "-"
        lines.append(
            f"| {cause} | {steps:,} | {steps / jobs:.2f} | {cpu:.0f} s | {cpu / whole['cpu']:.0%} | {per_step} |"
        )
    world = whole["cpu"] - sum(map(sum, whole["cpu_by"]))
    lines.append(f"| (the simulated cloud, GitHub, bus and clock; routing the history) | | | {world:.0f} s "
                 f"| {world / whole['cpu']:.0%} | |")  # fmt: skip
    return "\n".join(lines) + "\n\n" + _bands_text(whole, world, workers)


def _bands_text(whole: dict[str, Any], world: float, workers: int) -> str:
    """CPU per step by how many VMs the department had, and what the month would cost at the near-empty cost.

    Each kind of step is priced at its cheapest band's cost per step (in practice
    the near-empty fleet's): about what a planner with no per-VM work at all
    would bring the run down to, since a step on a near-empty fleet is still a step.
    """
    lines = [
        "The same steps by how many VMs the department had when each began:",
        "",
        "| VMs | steps | CPU | per step |",
        "|---|---|---|---|",
    ]
    for band, (_, label) in enumerate(VM_BANDS):
        steps = sum(row[band] for row in whole["steps_by"])
        cpu = sum(row[band] for row in whole["cpu_by"])
        per_step = f"{cpu / steps * 1e6:,.0f} µs" if steps else "-"
        lines.append(f"| {label} | {steps:,} | {cpu:.0f} s | {per_step} |")
    floor = world
    for steps_in, cpu_in in zip(whole["steps_by"], whole["cpu_by"], strict=True):
        per_step = [cpu / steps for steps, cpu in zip(steps_in, cpu_in, strict=True) if steps]
        floor += sum(steps_in) * min(per_step, default=0.0)
    lines += [
        "",
        f"Were every step as cheap as a step of its kind was in its cheapest band above, the one-piece run would take "
        f"{floor:.0f} s of CPU (the world's included) instead of {whole['cpu']:.0f} s: at best "
        f"{floor / workers:.0f} s on {workers} processes.",
    ]
    return "\n".join(lines)


def _policy_text(p: dict[str, Any]) -> str:
    lines = [
        f"Policy: `{p['generate']}` gave {p['jobs']:,} jobs; the same stack (max 150/80/40/20, GCE model) three ways, "
        f"in 2 processes ({p['wall']:.0f} s wall-clock). Boot and teardown per VM: {p['per_vm']:.2f} min "
        "(the model's mean create + boot + runner start-up + delete).",
        "",
        "| configuration | p50 wait | p95 wait | p99 wait | VM-min | job-min | VMs created | bound* | within | cost "
        "| GitHub requests, busiest hour | without unchanged listings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in p["rows"]:
        f: Figures = row["figures"]
        t = f.total
        ok = "yes" if t.vm_minutes <= row["bound"] else "no"
        lines.append(
            f"| {row['label']} | {t.wait_p50:.0f} s | {t.wait_p95:.0f} s | {t.wait_p99:.0f} s | {t.vm_minutes:,.0f} "
            f"| {t.job_minutes:,.0f} | {t.vms_created:,} | {row['bound']:,.0f} | {ok} | {t.cost:,.0f} {f.currency} "
            f"| {f.github_peak_hour:,} | {f.github_peak_hour_paid:,} |"
        )
    lines += ["", "*bound = 1.05 × (job-minutes + VMs created × boot and teardown) + configured warm-pool minutes."]
    return "\n".join(lines)


def reference_loop() -> float:
    """Seconds a fixed pure-Python loop takes here (best of 3): the same code runs at different paces on different days."""
    best = math.inf
    for _ in range(3):
        began, total = time.perf_counter(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "policy", "all"], default="all")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    parts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("speed", "all"):
            parts.append(_speed_text(speed(Path(tmp))))
            print(parts[-1], flush=True)
        if args.part in ("policy", "all"):
            parts.append(_policy_text(policy(Path(tmp))))
            print(parts[-1], flush=True)
    if args.write_docs:
        machine = (
            f"{os.cpu_count()} cores, Python {platform.python_version()}; this machine's pace: {reference_loop():.2f} s "
            "for a pure-Python loop adding 10 million integers (best of 3), to compare entries made on other machines"
        )
        command = ".venv/bin/python bench/simulate.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        entry = heading(dt.date.today().isoformat(), command.strip()) + f"\n\n{machine}.\n\n" + "\n\n".join(parts)
        intro = (
            "`garo simulate` (docs/simulate.md) replays a generated history through the real agent on a virtual "
            "clock, with the shipped latency model and price table. Speed is wall-clock and CPU time of one "
            "simulation (since 2026-12-01 both as `garo simulate` runs it, in pieces on a process per core, and in one "
            "piece; with the pace of the machine it ran on); the policy figures are the "
            "simulation's own output. bench/simulate.py."
        )
        add_entry("Simulation", intro, entry)
        print("wrote an entry to docs/benchmarks.md")


if __name__ == "__main__":
    main()
