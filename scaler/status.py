"""``garo status``: what on-call asks first, per runner group.

Queued jobs, the oldest waiting job and its age, VMs by state (and the ones an
operator keeps), and the JIT budget left. The agent knows all of it and serves
it as Prometheus text on its metrics port, so that is read first. When the
agent cannot be reached, the cloud and GitHub are asked directly, and the
output says so: queued jobs and the JIT budget live only in the agent (it
learns of queued jobs from the bus), so those columns are then unknown.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import requests
from prometheus_client.parser import text_string_to_metric_families

from scaler.agent.policy import keep_until
from scaler.backends.base import Backend, InstanceState
from scaler.config import StackConfig
from scaler.github.models import Runner

FROM_AGENT = "agent"
FROM_CLOUD = "cloud-and-github"


class StatusError(RuntimeError):
    """Neither the agent nor the cloud could be read."""


@dataclass
class GroupStatus:
    group: str
    max: int
    queued: int | None = None  # None: unknown (only the agent knows)
    oldest_waiting_seconds: float | None = None
    desired: int | None = None
    vms: dict[str, int] = field(default_factory=dict)  # state -> count
    kept: int = 0
    kept_vms: dict[str, str] = field(default_factory=dict)  # name -> kept until (UTC), cloud source only
    runners: dict[str, int] = field(default_factory=dict)  # busy/idle/offline, cloud source only


@dataclass
class Status:
    department: str
    source: str  # FROM_AGENT or FROM_CLOUD
    where: str  # the metrics URL, or why the agent was not read
    groups: list[GroupStatus]
    jit_budget_remaining: float | None = None
    last_reconcile_age_seconds: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def read_metrics(url: str, timeout: float = 3.0) -> str:
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    return response.text


def from_metrics(config: StackConfig, text: str, url: str, now: float) -> Status:
    """The agent's own view, from its Prometheus text (scaler/agent/metrics.py)."""
    groups = {g.name: GroupStatus(g.name, g.max) for g in config.groups}
    budget: float | None = None
    reconciled: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            status = groups.get(sample.labels.get("group", ""))
            value = sample.value
            if sample.name == "garo_github_jit_budget_remaining":
                budget = value
            elif sample.name == "garo_reconcile_last_success_timestamp_seconds" and value > 0:
                reconciled = max(0.0, now - value)
            elif status is None:
                continue
            elif sample.name == "garo_queued_jobs":
                status.queued = int(value)
            elif sample.name == "garo_oldest_waiting_job_seconds":
                status.oldest_waiting_seconds = value
            elif sample.name == "garo_desired_vms":
                status.desired = int(value)
            elif sample.name == "garo_kept_vms":
                status.kept = int(value)
            elif sample.name == "garo_vms" and value:
                status.vms[sample.labels["state"]] = int(value)
    return Status(config.department, FROM_AGENT, url, list(groups.values()), budget, reconciled)


def from_cloud(
    config: StackConfig, backend: Backend, runners: Callable[[], Sequence[Runner]], now: float, why: str
) -> Status:
    """The agent is down: VMs and kept VMs from the cloud, runners from GitHub; queued jobs unknown."""
    try:
        listed = {r.name: r for r in runners()}
    except Exception as exc:  # GitHub unreachable: the cloud's half is still worth showing
        listed = {}
        why += f"; GitHub not read ({type(exc).__name__})"
    groups = []
    for spec in config.groups:
        status = GroupStatus(spec.name, spec.max)
        for inst in backend.list(spec.name):
            status.vms[inst.state.value] = status.vms.get(inst.state.value, 0) + 1
            until = keep_until(spec, inst)
            if now < until:
                status.kept_vms[inst.name] = _utc(until)
            runner = listed.get(inst.name)
            if runner is not None and inst.state is not InstanceState.DELETING:
                kind = "busy" if runner.busy else ("idle" if runner.status == "online" else "offline")
                status.runners[kind] = status.runners.get(kind, 0) + 1
        status.kept = len(status.kept_vms)
        groups.append(status)
    return Status(config.department, FROM_CLOUD, why, groups)


def render_table(status: Status) -> str:
    if status.source == FROM_AGENT:
        head = f"department {status.department}: from the agent's metrics ({status.where})"
    else:
        head = (
            f"department {status.department}: AGENT UNREACHABLE ({status.where}); read from the cloud and GitHub "
            "directly (queued jobs and the JIT budget are known only to the agent)"
        )
    rows = [("group", "queued", "oldest waiting", "VMs by state", "kept", "desired/max")]
    for g in status.groups:
        states = ", ".join(f"{k} {v}" for k, v in sorted(g.vms.items())) or "none"
        if g.runners:
            states += " (runners: " + ", ".join(f"{k} {v}" for k, v in sorted(g.runners.items())) + ")"
        rows.append(
            (
                g.group,
                _unknown(g.queued),
                _age(g.oldest_waiting_seconds),
                states,
                str(g.kept),
                f"{_unknown(g.desired)}/{g.max}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)]
    for g in status.groups:
        lines += [f"kept: {g.group}/{name} until {until}" for name, until in sorted(g.kept_vms.items())]
    budget = "unknown" if status.jit_budget_remaining is None else f"{status.jit_budget_remaining:g} this minute"
    lines.append(f"JIT budget left: {budget}")
    if status.last_reconcile_age_seconds is not None:
        lines.append(f"last reconcile: {_age(status.last_reconcile_age_seconds)} ago")
    return "\n".join(lines) + "\n"


def _unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds <= 0:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _utc(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
