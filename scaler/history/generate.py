"""`garo history generate`: synthetic job traces for tests, demos and benchmarks. Never real history.

Every record says ``"source": "synthetic"`` and lives under the ``synthetic/``
owner, so a generated trace cannot pass for an export. The shape is what
sizing a pool depends on:

* **diurnal and weekly load**: workflow runs arrive as a Poisson process whose
  rate follows office hours (a bell around 13:00 local, a tenth of the peak at
  night) and drops on weekends;
* **matrix bursts**: a share of runs fan out into 8 to 64 jobs queued within
  a second, the case where a pool is too small and jobs get "stolen";
* **long-tail durations**: a mixture of short jobs (lognormal, median 3 min)
  and long ones (median 25 min), capped at GitHub's default 360-minute timeout;
* **a label mix**: weighted label sets, one per run (a matrix shares its labels).

Deterministic: the same options and `seed` give the same bytes. The wait
(queued to started) of a synthetic job is zero: waits are what the simulator
computes, not an input.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scaler.history.record import JobRecord

DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday, so a default trace starts on a working day
DEFAULT_LABELS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("self-hosted", "linux", "x64", "small"), 0.60),
    (("self-hosted", "linux", "x64", "medium"), 0.25),
    (("self-hosted", "linux", "x64", "large"), 0.10),
    (("self-hosted", "linux", "x64", "gpu"), 0.05),
)
MAX_DURATION = 360 * 60.0


@dataclass(frozen=True)
class TraceShape:
    days: int = 30
    jobs_per_day: float = 1700.0  # about 50,000 jobs in 30 days
    start: datetime = DEFAULT_START
    tz_offset_hours: float = 0.0  # the office's local time is UTC + this
    peak_hour: float = 13.0
    night_share: float = 0.1  # rate at night, as a share of the peak
    weekend_share: float = 0.15  # weekend rate, as a share of a weekday's
    matrix_share: float = 0.05  # share of runs that are matrix bursts
    matrix_jobs: tuple[int, int] = (8, 64)
    repositories: int = 20
    labels: tuple[tuple[tuple[str, ...], float], ...] = DEFAULT_LABELS
    failure_share: float = 0.09
    cancelled_share: float = 0.03

    def __post_init__(self) -> None:
        if self.days < 1 or self.jobs_per_day <= 0 or self.repositories < 1:
            raise ValueError("days, jobs per day and repositories must be positive")
        if self.start.tzinfo is None:
            raise ValueError("start must be a time with a zone")
        if not self.labels or any(weight <= 0 or not labels for labels, weight in self.labels):
            raise ValueError("the label mix needs label sets with positive weights")
        low, high = self.matrix_jobs
        if not 2 <= low <= high or not 0 <= self.matrix_share <= 1:
            raise ValueError("a matrix has 2 or more jobs, and matrix_share is a share")

    def rate(self, when: datetime) -> float:
        """Relative run rate at `when` (1.0 = a weekday's peak hour)."""
        local = when + timedelta(hours=self.tz_offset_hours)
        hour = local.hour + local.minute / 60
        bell = math.exp(-(((hour - self.peak_hour) / 3.5) ** 2))
        day = self.night_share + (1 - self.night_share) * bell
        return day * (self.weekend_share if local.weekday() >= 5 else 1.0)


def parse_label_mix(text: str) -> tuple[tuple[tuple[str, ...], float], ...]:
    """'self-hosted,linux,small=0.7;self-hosted,linux,large=0.3' -> the label mix."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        labels, _, weight = part.rpartition("=")
        names = tuple(label.strip() for label in labels.split(",") if label.strip())
        try:
            mix.append((names, float(weight)))
        except ValueError:
            raise ValueError(f"label mix entry {part!r}: expected labels=weight") from None
    return tuple(mix)


def generate(shape: TraceShape, seed: int) -> Iterator[JobRecord]:
    """The trace's jobs, run by run (a matrix's jobs spread over a second: sort by created_at to replay)."""
    rng = random.Random(seed)
    mean_jobs_per_run = (1 - shape.matrix_share) * 1.6 + shape.matrix_share * sum(shape.matrix_jobs) / 2
    # Mean of rate() over a week, by the minute, to turn jobs/day into a peak run rate.
    week = [shape.rate(shape.start + timedelta(minutes=m)) for m in range(0, 7 * 24 * 60, 10)]
    runs_per_day = shape.jobs_per_day / mean_jobs_per_run
    peak_per_second = runs_per_day / (sum(week) / len(week)) / 86400
    repos = [f"synthetic/repo-{i:02d}" for i in range(1, shape.repositories + 1)]
    repo_weights = [1 / i for i in range(1, len(repos) + 1)]  # a few busy repositories, a long tail
    label_sets = [labels for labels, _ in shape.labels]
    label_weights = [weight for _, weight in shape.labels]
    end = shape.start + timedelta(days=shape.days)
    now, job_id, run_id = shape.start, 0, 0
    while True:
        # Thinning: candidate arrivals at the peak rate, kept with probability rate(t).
        now += timedelta(seconds=rng.expovariate(peak_per_second))
        if now >= end:
            return
        if rng.random() >= shape.rate(now):
            continue
        run_id += 1
        matrix = rng.random() < shape.matrix_share
        count = rng.randint(*shape.matrix_jobs) if matrix else rng.choice((1, 1, 1, 2, 2, 3, 3, 1, 1, 1))
        repo = rng.choices(repos, repo_weights)[0]
        labels = rng.choices(label_sets, label_weights)[0]
        for index in range(count):
            job_id += 1
            jitter = rng.randint(0, 900) if matrix else 0
            created = now + timedelta(milliseconds=jitter + index * 10)
            created = created.replace(microsecond=created.microsecond // 1000 * 1000)  # what the file keeps
            duration = _duration(rng)
            roll = rng.random()
            conclusion = (
                "failure"
                if roll < shape.failure_share
                else "cancelled"
                if roll < shape.failure_share + shape.cancelled_share
                else "success"
            )
            yield JobRecord(
                id=job_id,
                repository=repo,
                labels=labels,
                created_at=created,
                started_at=created,
                completed_at=created + timedelta(seconds=duration),
                run_attempt=1,
                conclusion=conclusion,
                run_id=run_id,
                source="synthetic",
            )


def _duration(rng: random.Random) -> float:
    """Seconds: 85% short jobs (median 3 min), 15% long ones (median 25 min), capped at 360 min."""
    if rng.random() < 0.85:
        seconds = rng.lognormvariate(math.log(180), 0.9)
    else:
        seconds = rng.lognormvariate(math.log(1500), 0.7)
    return round(min(max(seconds, 5.0), MAX_DURATION), 3)


def label_mix_text(mix: Sequence[tuple[tuple[str, ...], float]]) -> str:
    return ";".join(f"{','.join(labels)}={weight:g}" for labels, weight in mix)
