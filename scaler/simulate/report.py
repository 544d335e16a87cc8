"""The report directory: figures.json and the plots a platform team looks at.

* ``wait-vs-vms.png``: the wait from queued to started (p95 and max per time
  bucket) above the VMs the department had (creating, running or being
  deleted), on the same time axis;
* ``cost-vs-p95.png``: every configuration simulated, cost against p95 wait,
  the Pareto front joined up and the chosen one marked.

matplotlib runs on its Agg backend: no display is needed (CI, containers).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaler.simulate.engine import RunResult
from scaler.simulate.figures import percentile


@dataclass(frozen=True)
class Series:
    """Per time bucket: start (unix s), p95 and max wait of the jobs queued in it (s), max active VMs."""

    bucket: float
    starts: tuple[float, ...]
    wait_p95: tuple[float, ...]
    wait_max: tuple[float, ...]
    vms_max: tuple[int, ...]


def series(result: RunResult) -> Series:
    span = result.end - result.start
    bucket = 600.0 if span <= 3 * 86400 else 3600.0
    count = max(1, int(span // bucket) + 1)
    waits: list[list[float]] = [[] for _ in range(count)]
    for job in result.jobs:
        if job.started is not None:
            waits[min(count - 1, int((job.created - result.start) // bucket))].append(
                max(0.0, job.started - job.created)
            )
    vms = [0] * count
    current: dict[str, int] = {}
    for when, group, active in result.usage.active_series:
        current[group] = active
        i = min(count - 1, max(0, int((when - result.start) // bucket)))
        vms[i] = max(vms[i], sum(current.values()))
    level = 0  # a bucket with no change keeps the level it started with
    for i in range(count):
        level = vms[i] if vms[i] else level
        vms[i] = max(vms[i], level)
    p95, peak = [], []
    for w in waits:
        w.sort()
        p95.append(percentile(w, 95))
        peak.append(w[-1] if w else 0.0)
    starts = tuple(result.start + i * bucket for i in range(count))
    return Series(bucket, starts, tuple(p95), tuple(peak), tuple(vms))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_wait_vs_vms(s: Series, title: str, path: Path) -> None:
    plt = _pyplot()
    times = [datetime.fromtimestamp(t, UTC) for t in s.starts]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 6), height_ratios=(1, 1))
    top.plot(times, [w / 60 for w in s.wait_max], color="#d62728", linewidth=0.8, alpha=0.6, label="max")
    top.plot(times, [w / 60 for w in s.wait_p95], color="#1f77b4", linewidth=1.2, label="p95")
    top.set_ylabel("wait, queued → started (min)")
    top.legend(loc="upper right")
    top.grid(alpha=0.3)
    bottom.step(times, s.vms_max, where="post", color="#2ca02c", linewidth=1.0)
    bottom.set_ylabel("VMs (max per bucket)")
    bottom.grid(alpha=0.3)
    bottom.set_xlabel(f"time (UTC), {s.bucket / 60:.0f}-minute buckets")
    fig.suptitle(title)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_vs_p95(
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    front: Sequence[int],
    chosen: int | None,
    currency: str,
    path: Path,
    target: float | None = None,
    title: str = "",
) -> None:
    """``labels`` annotate the Pareto front's points (keep them short: the values); ``title`` names the keys."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([p[1] for p in points], [p[0] for p in points], color="#999999", s=18, label="configurations")
    fx = [points[i][1] for i in front]
    fy = [points[i][0] for i in front]
    ax.plot(fx, fy, color="#1f77b4", marker="o", linewidth=1.2, label="Pareto front")
    for i in front:
        ax.annotate(labels[i], (points[i][1], points[i][0]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if target is not None:
        ax.axvline(target, color="#d62728", linestyle="--", linewidth=1, label=f"target p95 {target:.0f}s")
    if chosen is not None:
        ax.scatter(
            [points[chosen][1]], [points[chosen][0]], color="#d62728", s=80, marker="*", label="chosen", zorder=3
        )
    ax.set_xlabel("p95 wait, queued → started (s)")
    ax.set_ylabel(f"cost ({currency})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(textwrap.fill(title, 100), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
