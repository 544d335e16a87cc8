"""From one run to the figures a platform team decides on: waits, VM-minutes, cost, API calls.

Per group and in total: the wait from queued to started (p50, p95, p99, max),
VM-minutes against job-minutes, cost from the price table, cloud and GitHub
API calls, how close the JIT budget came to its limit, GitHub requests in the
busiest hour, stolen jobs and replacement VMs. Plain data (``to_json``) so
sweeps can send it between processes and ``--json`` can print it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scaler import naming
from scaler.agent.policy import priority_class
from scaler.config.priorities import CLASSES
from scaler.simulate.engine import RunResult
from scaler.simulate.models import PriceTable

PRICE_CLOUDS = {"gcp": "gce", "aws": "ec2", "local": "gce"}
HOUR = 3600.0
# An App installation's hourly limit at its lowest (GitHub: 5,000, plus 50 per repository and per
# user above 20, up to 12,500; 15,000 on Enterprise Cloud). The table sets a run's peak hour beside it.
HOURLY_LIMIT = 5_000


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of sorted values; 0 for none."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass(frozen=True)
class GroupFigures:
    group: str
    jobs: int
    wait_p50: float
    wait_p95: float
    wait_p99: float
    wait_max: float
    never_started: int
    vm_minutes: float
    job_minutes: float
    standby_minutes: float
    warm_pool_minutes: float
    cost: float
    stolen: int
    replacements: int
    failed_jobs: int
    vms_created: int

    @property
    def ratio(self) -> float:
        return self.vm_minutes / self.job_minutes if self.job_minutes else math.inf


@dataclass(frozen=True)
class Figures:
    groups: tuple[GroupFigures, ...]
    total: GroupFigures
    currency: str
    price_dated: str
    days: float
    cloud_calls: dict[str, int]
    github_calls: dict[str, int]
    jit_peak_per_minute: int
    jit_per_minute: int
    jit_minutes_at_limit: int
    jit_refused: int
    # Requests GitHub served (a listing's every page) and the most in any hour: the installation's
    # hourly limit (5,000 to 15,000) counts them all, and binds before the JIT budget under sustained load.
    github_requests: int
    github_peak_hour: int
    # Of those, listing requests that repeated an unchanged listing: the agent's client asks on condition
    # (If-None-Match) and GitHub does not count a 304 against the hourly limit. The busiest hour without them.
    github_unchanged: int
    github_peak_hour_paid: int
    capacity_errors: int
    preemptions: int
    unrouted: int
    steps: int
    pieces: int  # the history ran in this many pieces (scaler.simulate.pieces)
    # With garo:priorities: per priority class, (jobs, p50, p95, max wait in s). Histories carry no
    # workflow names, so classes come from repository rules only.
    waits_by_class: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for entry in [data["total"], *data["groups"]]:
            entry["vm_to_job_ratio"] = (
                round(entry["vm_minutes"] / entry["job_minutes"], 4) if entry["job_minutes"] else None
            )
        return data


def _group(
    name: str,
    waits: list[float],
    never: int,
    vm_s: float,
    job_s: float,
    standby_s: float,
    warm_s: float,
    cost: float,
    stolen: int,
    replacements: int,
    failed: int,
    created: int,
) -> GroupFigures:
    waits.sort()
    return GroupFigures(
        name,
        len(waits) + never,
        percentile(waits, 50),
        percentile(waits, 95),
        percentile(waits, 99),
        waits[-1] if waits else 0.0,
        never,
        vm_s / 60,
        job_s / 60,
        standby_s / 60,
        warm_s / 60,
        cost,
        stolen,
        replacements,
        failed,
        created,
    )


def figures(result: RunResult, prices: PriceTable) -> Figures:
    config = result.config
    price_cloud = PRICE_CLOUDS.get(config.cloud, config.cloud)
    usage = result.usage
    names = [g.name for g in config.groups]
    replacements: dict[str, int] = dict.fromkeys(names, 0)
    for _, event, vm in result.vm_log:
        parsed = naming.parse_name(config.department, names, vm) if event == "create" else None
        if parsed is not None and parsed.generation > 0:
            replacements[parsed.group] += 1
    per_group: list[GroupFigures] = []
    all_waits: list[float] = []
    totals = dict(never=0, job=0.0, stolen=0, failed=0, cost=0.0)
    for group in config.groups:
        jobs = [j for j in result.jobs if j.group == group.name]
        waits = [max(0.0, j.started - j.created) for j in jobs if j.started is not None]
        never = sum(1 for j in jobs if j.started is None)
        job_s = sum(j.duration for j in jobs if j.started is not None)
        hourly = prices.hourly(price_cloud, config.region, group.machine_type, group.spot)
        cost = usage.vm_seconds[group.name] / 3600 * hourly
        stolen = sum(1 for j in jobs if j.stolen)
        failed = sum(1 for j in jobs if j.failed)
        all_waits += waits
        totals["never"] += never
        totals["job"] += job_s
        totals["stolen"] += stolen
        totals["failed"] += failed
        totals["cost"] += cost
        per_group.append(
            _group(
                group.name,
                waits,
                never,
                usage.vm_seconds[group.name],
                job_s,
                usage.standby_seconds[group.name],
                result.warm_seconds[group.name],
                cost,
                stolen,
                replacements[group.name],
                failed,
                usage.created[group.name],
            )
        )
    total = _group(
        "total",
        all_waits,
        int(totals["never"]),
        sum(usage.vm_seconds.values()),
        totals["job"],
        sum(usage.standby_seconds.values()),
        sum(result.warm_seconds.values()),
        totals["cost"],
        int(totals["stolen"]),
        sum(replacements.values()),
        int(totals["failed"]),
        sum(usage.created.values()),
    )
    peak, at_limit = _jit_windows(result.jit_times, result.jit_per_minute)
    by_class: dict[str, list[float]] = {}
    if config.priorities:
        for job in result.jobs:
            if job.started is not None:
                klass = priority_class(config.priorities, job.repository, "")
                by_class.setdefault(klass, []).append(max(0.0, job.started - job.created))
    waits_by_class = {
        k: (len(w), percentile(sorted(w), 50), percentile(sorted(w), 95), max(w))
        for k in CLASSES
        if (w := by_class.get(k))
    }
    return Figures(
        groups=tuple(per_group),
        total=total,
        currency=prices.currency,
        price_dated=prices.dated,
        days=(result.end - result.start) / 86400,
        cloud_calls=dict(sorted(usage.calls.items())),
        github_calls=dict(sorted(result.github_calls.items())),
        jit_peak_per_minute=peak,
        jit_per_minute=result.jit_per_minute,
        jit_minutes_at_limit=at_limit,
        jit_refused=result.jit_refused,
        github_requests=len(result.request_times),
        github_peak_hour=most_within(result.request_times, HOUR),
        github_unchanged=len(result.unchanged_times),
        github_peak_hour_paid=most_within(without(result.request_times, result.unchanged_times), HOUR),
        capacity_errors=usage.capacity_errors,
        preemptions=usage.preemptions,
        unrouted=result.unrouted,
        steps=result.steps,
        pieces=result.pieces,
        waits_by_class=waits_by_class,
    )


def most_within(times: Sequence[float], window: float) -> int:
    """The most of ``times`` (in order) in any span of ``window`` seconds, its end excluded."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def without(times: Sequence[float], some: Sequence[float]) -> list[float]:
    """``times`` (in order) less ``some`` of them (in order, each one of ``times``), one for one."""
    rest: list[float] = []
    i = 0
    for t in times:
        if i < len(some) and some[i] == t:
            i += 1
        else:
            rest.append(t)
    return rest


def _jit_windows(times: list[float], limit: int) -> tuple[int, int]:
    """The most JIT configs in any 60 s window, and in how many distinct minutes a window reached the limit."""
    minutes = {int(t // 60) for i, t in enumerate(times) if bisect.bisect_right(times, t + 60.0 - 1e-9) - i >= limit}
    return most_within(times, 60.0), len(minutes)


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _in_pieces(pieces: int) -> str:
    return f" in {pieces} pieces" if pieces > 1 else ""


def table(f: Figures) -> str:
    """The terminal table: one row per group and a total."""
    head = (
        f"{'group':<12} {'jobs':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} {'VM-min':>10} {'job-min':>10} "
        f"{'ratio':>6} {'cost':>10} {'stolen':>6} {'repl':>5}"
    )
    lines = [head, "-" * len(head)]
    for g in (*f.groups, f.total):
        ratio = f"{g.ratio:.2f}" if math.isfinite(g.ratio) else "-"
        lines.append(
            f"{g.group:<12} {g.jobs:>7} {duration_text(g.wait_p50):>6} {duration_text(g.wait_p95):>6} "
            f"{duration_text(g.wait_p99):>6} {duration_text(g.wait_max):>6} {g.vm_minutes:>10.0f} "
            f"{g.job_minutes:>10.0f} {ratio:>6} {g.cost:>10.2f} {g.stolen:>6} {g.replacements:>5}"
        )
    for klass, (jobs, p50, p95, longest) in f.waits_by_class.items():
        lines.append(
            f"  class {klass:<10} jobs {jobs:>7} p50 {duration_text(p50):>6} p95 {duration_text(p95):>6} "
            f"max {duration_text(longest):>6}"
        )
    calls = ", ".join(f"{k} {v}" for k, v in f.cloud_calls.items())
    gh = ", ".join(f"{k} {v}" for k, v in f.github_calls.items())
    lines += [
        "",
        f"{f.days:.1f} days simulated{_in_pieces(f.pieces)}; cost in {f.currency} (price table dated {f.price_dated}); "
        f"warm-pool minutes configured: {f.total.warm_pool_minutes:.0f}; standby minutes: {f.total.standby_minutes:.0f}",
        f"cloud calls: {calls}",
        f"GitHub calls: {gh}",
        f"JIT budget: peak {f.jit_peak_per_minute}/{f.jit_per_minute} per minute, "
        f"{f.jit_minutes_at_limit} minute(s) at the limit, {f.jit_refused} refused",
        f"GitHub requests (each page of a listing): {f.github_requests}, at most {f.github_peak_hour} in an hour "
        f"(an App installation's hourly limit: {HOURLY_LIMIT:,} and up); {f.github_unchanged} of them repeat an "
        f"unchanged listing, free when GitHub answers them 304: then at most {f.github_peak_hour_paid} in an hour",
        f"capacity errors {f.capacity_errors}, spot preemptions {f.preemptions}, failed jobs {f.total.failed_jobs}, "
        f"never started {f.total.never_started}, not simulated (no group fits, or never ran) {f.unrouted}",
    ]
    return "\n".join(lines)
