"""What a chaos run counts, from the world's record and the deliveries' answers; as JSON, a table and docs.

* **lost**: jobs that never got a runner (never started) by the end;
* **leaked**: VMs still alive more than one reconcile interval after the job
  they ran completed at GitHub (a VM still alive at the end counts until then);
* **doubled**: jobs that at some moment had two live VMs made for them that
  had run nothing, while the job still waited;
* **unexpected 5xx**: webhook answers >= 500 other than 503s to requests in
  flight during a bus outage.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaler import naming
from tests.agent.gcpkit import DEPARTMENT, GROUP

if TYPE_CHECKING:
    from tests.chaos.driver import Run

BEGIN, END = "<!-- chaos:begin (written by tests/chaos/driver.py) -->", "<!-- chaos:end -->"


@dataclass
class Report:
    seed: int
    jobs: int
    replicas: int
    duration_s: float
    interval_s: int
    wall_s: float
    drained_s: float | None  # seconds after the load until everything settled (None: never)
    lost: list[int]
    leaked: list[str]
    doubled: list[int]
    unexpected_5xx: dict[str, int]
    not_published: dict[str, int]  # 2xx answers that did not publish the event (unmatched, ignored ...)
    expected_503: int
    no_answer: int
    statuses: dict[str, int]
    events: dict[str, int]
    dropped: dict[str, int]
    duplicated: int
    redelivered: int
    stolen: int
    vms_created: int
    vms_unused: int
    vms_at_end: list[str]  # name: what it did (the warm pool stays)
    idle_beyond_warm: int  # idle VMs at the end beyond the warm pool's size (cost, not a goal)
    late_vms: list[str]  # VMs made for a job more than a second after that job had started elsewhere
    vm_linger_s: dict[str, float]  # after its job: p50, p99, max
    faults: dict[str, int]
    kills: dict[str, int]
    crashes: dict[str, int]
    compute_calls: int
    compute_faults_answered: int
    github_calls: dict[str, int]
    schedule: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.leaked or self.doubled or self.unexpected_5xx or self.not_published)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def build_report(run: Run, started: float, ended: float, drained_at: float | None) -> Report:
    o, world = run.options, run.world
    deliveries, blocker = run.deliveries, run.blocker
    assert deliveries is not None
    interval = o.interval
    lost = sorted(r.id for r in world.jobs.values() if r.started_at is None)
    leaked: list[str] = []
    linger: list[float] = []
    delivered: dict[int, float] = {}  # job -> when its completed event was first accepted
    for a in deliveries.answers:
        if a.action == "completed" and 200 <= a.status < 300:
            delivered[a.job] = min(delivered.get(a.job, a.answered), a.answered)
    for vm in world.vms.values():
        job = world.jobs.get(vm.ran) if vm.ran is not None else None
        if job is None or job.completed_at is None:
            continue
        lived = (vm.gone_at if vm.gone_at is not None else ended) - job.completed_at
        linger.append(lived)
        if lived > interval:
            got = delivered.get(job.id)
            told = "never delivered" if got is None else f"delivered after {got - job.completed_at:.1f} s"
            leaked.append(f"{vm.name}: gone {lived:.1f} s after job {job.id} ended (event {told})")
    statuses: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    expected = no_answer = 0
    not_published: Counter[str] = Counter()
    for a in deliveries.answers:
        if 200 <= a.status < 300 and a.outcome not in ("published", "duplicate"):
            not_published[f"{a.outcome} {a.action}"] += 1
        statuses[str(a.status or "no answer")] += 1
        if a.status == 0:
            no_answer += 1
        elif a.status == 503 and blocker.during(a.sent, a.answered):
            expected += 1
        elif a.status >= 500:
            unexpected[f"{a.status} {a.action}"] += 1
    stolen = sum(
        1
        for r in world.jobs.values()
        if r.vm is not None and naming.job_of(DEPARTMENT, GROUP, r.vm) not in (r.id, None)
    )
    linger.sort()
    return Report(
        seed=o.seed,
        jobs=len(world.jobs),
        replicas=o.replicas,
        duration_s=o.duration,
        interval_s=interval,
        wall_s=round(ended - started, 1),
        drained_s=None if drained_at is None else round(max(0.0, drained_at - started - o.duration), 1),
        lost=lost,
        leaked=leaked,
        doubled=sorted(world.doubled),
        unexpected_5xx=dict(unexpected),
        not_published=dict(not_published),
        expected_503=expected,
        no_answer=no_answer,
        statuses=dict(sorted(statuses.items())),
        events=dict(sorted(deliveries.emitted.items())),
        dropped=dict(sorted(deliveries.dropped.items())),
        duplicated=deliveries.duplicated,
        redelivered=deliveries.redelivered,
        stolen=stolen,
        vms_created=len(world.vms),
        vms_unused=sum(1 for vm in world.vms.values() if vm.ran is None),
        late_vms=_late(run),
        idle_beyond_warm=max(0, sum(1 for vm in world.live_vms() if vm.ran is None) - o.warm),
        vms_at_end=[
            f"{vm.name}: " + (f"ran job {vm.ran}" if vm.ran else "booted, idle" if vm.booted_at else "never booted")
            for vm in world.live_vms()
        ],
        vm_linger_s={
            "p50": round(statistics.median(linger), 1) if linger else 0.0,
            "p99": round(linger[int(0.99 * (len(linger) - 1))], 1) if linger else 0.0,
            "max": round(linger[-1], 1) if linger else 0.0,
        },
        faults=dict(sorted(Counter(f.kind for f in run.done_faults).items())),
        kills=dict(run.kills),
        crashes={m.name: m.crashes for m in [run.webhook, *run.agents] if m.crashes},
        compute_calls=sum(world.compute.calls.values()),
        compute_faults_answered=sum(f.count for f in run.done_faults if f.kind == "compute-errors"),
        github_calls=dict(sorted(world.github.calls.items())),
        schedule=[str(f) for f in run.done_faults],
    )


def _late(run: Run) -> list[str]:
    late = []
    for vm in run.world.vms.values():
        job = run.world.jobs.get(naming.job_of(DEPARTMENT, GROUP, vm.name) or 0)
        if job is not None and job.started_at is not None and vm.first_seen > job.started_at + 1.0:
            late.append(f"{vm.name} ({vm.first_seen - job.started_at:.1f} s after job {job.id} started)")
    return late


def table(r: Report) -> str:
    def cell(values: list[Any] | dict[str, Any]) -> str:
        return str(len(values)) + (f" ({', '.join(map(str, list(values)[:5]))})" if values else "")

    rows = [
        ("jobs that never got a runner (goal 0)", cell(r.lost)),
        (f"VMs alive > {r.interval_s} s (one reconcile interval) after their job (goal 0)", cell(r.leaked)),
        ("jobs that got two VMs (goal 0)", cell(r.doubled)),
        ("webhook 5xx other than bus-outage 503s (goal 0)", cell(r.unexpected_5xx)),
        ("events answered 2xx but not published (goal 0)", cell(r.not_published)),
        ("webhook 503s during bus outages (redelivered)", str(r.expected_503)),
        ("deliveries with no answer (worker killed; redelivered)", str(r.no_answer)),
        ("jobs / events emitted", f"{r.jobs} / {sum(r.events.values())} {r.events}"),
        ("events dropped (never delivered)", f"{sum(r.dropped.values())} {r.dropped}"),
        ("deliveries duplicated / redelivered", f"{r.duplicated} / {r.redelivered}"),
        ("jobs stolen (ran on a VM made for another job)", str(r.stolen)),
        ("VMs created / never ran a job", f"{r.vms_created} / {r.vms_unused}"),
        ("VMs alive at the end (warm pool included)", cell(r.vms_at_end)),
        ("idle VMs beyond the warm pool at the end", str(r.idle_beyond_warm)),
        ("VMs made for a job after it had started elsewhere", cell(r.late_vms)),
        ("VM lifetime after its job: p50 / p99 / max", "{p50} / {p99} / {max} s".format(**r.vm_linger_s)),
        ("faults injected", str(r.faults)),
        ("processes killed (kill -9)", str(r.kills)),
        ("processes that exited on their own", str(r.crashes or 0)),
        ("webhook answers", str(r.statuses)),
        ("GitHub answers (endpoint status: n)", str(r.github_calls)),
        (
            "wall time / drained after the load",
            f"{r.wall_s} s / {'never' if r.drained_s is None else f'{r.drained_s} s'}",
        ),
    ]
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def write_docs(path: Path, r: Report, command: str) -> None:
    """Replace the generated section of ``path`` (between the markers); the rest is hand-written."""
    text = path.read_text() if path.exists() else f"# Reliability\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    verdict = "**0 lost, 0 leaked, 0 doubled, 0 unexpected 5xx.**" if r.ok else "**Goals not met** (see the table)."
    section = f"""{BEGIN}
Run on {time.strftime("%Y-%m-%d")} with `{command}` (seed {r.seed}, {r.jobs} jobs over {r.duration_s:g} s, \
{r.replicas} agent replicas, reconcile interval {r.interval_s} s). {verdict}

{table(r)}

Fault schedule of this seed (seconds after the load started):

```
{chr(10).join(r.schedule)}
```
{END}"""
    path.write_text(head + section + tail)
