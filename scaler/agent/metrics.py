"""Prometheus metrics of the agent, on a registry the caller owns.

The registry is passed in (not the global one) so that ``garo demo`` can run
several agents in one process and tests can read values without leaking
between cases. Label values are groups and API call kinds, never job ids:
those would grow the series without bound.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scaler.backends.base import InstanceState
from scaler.github.models import Runner

_VERSION = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")


def runner_version_counts(runners: Iterable[Runner]) -> dict[str, int]:
    """Registered runners per runner version as GitHub reports it.

    "unknown" for a runner that has not connected yet; anything that is not a
    plain x.y.z becomes "other", so a strange value cannot grow the series.
    """
    tally = Tally(
        r.version if r.version and _VERSION.match(r.version) else ("unknown" if not r.version else "other")
        for r in runners
    )
    return dict(tally)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queued_jobs = Gauge("garo_queued_jobs", "Jobs waiting for a runner, per group", ["group"], registry=r)
        self.vms = Gauge("garo_vms", "VMs of a group by state", ["group", "state"], registry=r)
        self.desired = Gauge("garo_desired_vms", "Active VMs the capacity policy wants", ["group"], registry=r)
        self.pickup = Histogram(
            "garo_queue_to_assigned_seconds",
            "Time from a job being queued to a runner taking it (GitHub's timestamps)",
            ["group"],
            buckets=(1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800),
            registry=r,
        )
        self.api_calls = Counter("garo_api_calls_total", "Calls to cloud and GitHub APIs", ["api", "call"], registry=r)
        self.api_errors = Counter(
            "garo_api_errors_total", "Failed API calls by kind", ["api", "call", "kind"], registry=r
        )
        # The GitHub budget (garo_github_jit_budget_remaining, garo_github_ratelimit_remaining) is
        # exported by the GitHub client into the same registry.
        self.events = Counter("garo_events_total", "Bus messages handled", ["action", "outcome"], registry=r)
        self.actions = Counter("garo_actions_total", "Fleet changes made", ["group", "action"], registry=r)
        self.reconcile_passes = Counter("garo_reconcile_passes_total", "Reconcile passes run", registry=r)
        self.runner_versions = Gauge(
            "garo_runner_versions",
            "The department's registered runners by the runner version GitHub reports (docs/images.md)",
            ["version"],
            registry=r,
        )
        self._versions_seen: set[str] = set()

    def set_runner_versions(self, runners: Iterable[Runner]) -> None:
        counts = runner_version_counts(runners)
        # Versions no longer seen drop to 0 rather than vanish: an alert over a window still sees them go.
        for version in self._versions_seen | counts.keys():
            self.runner_versions.labels(version).set(counts.get(version, 0))
        self._versions_seen |= counts.keys()

    def set_vms(self, group: str, counts: dict[str, int]) -> None:
        for state in InstanceState:
            self.vms.labels(group, state.value).set(counts.get(state.value, 0))
