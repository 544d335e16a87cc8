"""Prometheus metrics of the agent, on a registry the caller owns.

The registry is passed in (not the global one) so that ``garo demo`` can run
several agents in one process and tests can read values without leaking
between cases. Label values are groups and API call kinds, never job ids:
those would grow the series without bound.
"""

from __future__ import annotations

import functools
import operator
import re
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import prometheus_client
from prometheus_client import CollectorRegistry

from scaler.backends.base import InstanceState
from scaler.github.models import Runner

_VERSION_OF = operator.attrgetter("version")
_VERSION = re.compile(r"^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}$")


M = TypeVar("M", bound="prometheus_client.metrics.MetricWrapperBase")


def _cached_labels(metric: M, labelvalues: tuple[Any, ...], labelkwargs: dict[str, Any], parent: Any) -> M:
    """The child for these label values, looked up once: the agent labels a few series on every batch,
    and prometheus_client's ``labels`` checks and locks on each call (`garo simulate` profiles)."""
    if labelkwargs:
        return parent.labels(metric, *labelvalues, **labelkwargs)  # type: ignore[no-any-return]
    cache: dict[tuple[Any, ...], M] | None = metric.__dict__.get("_children")
    if cache is None:
        cache = metric.__dict__["_children"] = {}
    child = cache.get(labelvalues)
    if child is None:
        child = cache[labelvalues] = parent.labels(metric, *labelvalues)
    return child


class _ForgetsChildren(prometheus_client.metrics.MetricWrapperBase):
    """Removing or clearing series forgets the cached children too (a removed series starts again at zero)."""

    def remove(self, *labelvalues: Any) -> None:
        self.__dict__.pop("_children", None)
        super().remove(*labelvalues)

    def clear(self) -> None:
        self.__dict__.pop("_children", None)
        super().clear()


class Counter(_ForgetsChildren, prometheus_client.Counter):
    """A Counter whose labelled children are cached (same series, same values)."""

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Counter:
        return _cached_labels(self, labelvalues, labelkwargs, prometheus_client.Counter)


class Gauge(_ForgetsChildren, prometheus_client.Gauge):
    """A Gauge whose labelled children are cached, and set only when the value changes (same values).

    The executor sets each group's gauges after every plan, mostly to what they already say.
    """

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Gauge:
        return _cached_labels(self, labelvalues, labelkwargs, prometheus_client.Gauge)

    def set(self, value: float) -> None:
        value = float(value)
        if self.__dict__.get("_last_set") == value and not self._is_most_recent:
            return
        super().set(value)
        self._last_set = value

    def inc(self, amount: float = 1) -> None:
        self.__dict__.pop("_last_set", None)
        super().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.__dict__.pop("_last_set", None)
        super().dec(amount)

    def set_function(self, f: Callable[[], float]) -> None:
        self.__dict__.pop("_last_set", None)
        super().set_function(f)


class Histogram(_ForgetsChildren, prometheus_client.Histogram):
    """A Histogram whose labelled children are cached (same series, same values)."""

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Histogram:
        return _cached_labels(self, labelvalues, labelkwargs, prometheus_client.Histogram)


@functools.lru_cache(maxsize=256)
def _version_series(version: str) -> str:
    """The series a reported version counts in (a listing repeats the same few versions)."""
    return version if version and _VERSION.match(version) else ("unknown" if not version else "other")


def runner_version_counts(runners: Iterable[Runner]) -> dict[str, int]:
    """Registered runners per runner version as GitHub reports it.

    "unknown" for a runner that has not connected yet; anything that is not a
    plain x.y.z becomes "other", so a strange value cannot grow the series.
    """
    counts: dict[str, int] = {}
    for version, n in Tally(map(_VERSION_OF, runners)).items():  # the few distinct versions, then their series
        series = _version_series(version or "")
        counts[series] = counts.get(series, 0) + n
    return counts


#: Where a deployed agent serves its metrics (GARO_METRICS_PORT; infra/department.py sets it and
#: infra/monitoring.py's collector scrapes it). prometheus_client answers on any path; this is the one scraped.
DEFAULT_METRICS_PORT = 9464
METRICS_PATH = "/metrics"


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queued_jobs = Gauge("garo_queued_jobs", "Jobs waiting for a runner, per group", ["group"], registry=r)
        self.vms = Gauge("garo_vms", "VMs of a group by state", ["group", "state"], registry=r)
        self.kept_vms = Gauge(
            "garo_kept_vms", "VMs an operator keeps for debugging (garo-keep), per group", ["group"], registry=r
        )
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

        # For the alerts in deploy/prometheus/garo-alerts.yaml (docs/operations.md).
        self.reconcile_failures = Counter(
            "garo_reconcile_failures_total", "Reconcile passes, or one group's part of a pass, that failed", registry=r
        )
        self.reconcile_success = Gauge(
            "garo_reconcile_last_success_timestamp_seconds", "When the last reconcile pass completed", registry=r
        )
        self.oldest_waiting = Gauge(
            "garo_oldest_waiting_job_seconds",
            "Age of the oldest job still waiting for a runner (since the agent first heard of it); 0 if none",
            ["group"],
            registry=r,
        )
        self.oldest_vm = Gauge(
            "garo_oldest_vm_age_seconds", "Age of the oldest active VM of a group; 0 if none", ["group"], registry=r
        )
        self.time_to_live = Gauge(
            "garo_vm_time_to_live_seconds",
            "The group's time-to-live, for comparing with VM ages",
            ["group"],
            registry=r,
        )

    def set_runner_versions(self, runners: Iterable[Runner]) -> None:
        counts = runner_version_counts(runners)
        # Versions no longer seen drop to 0 rather than vanish: an alert over a window still sees them go.
        for version in self._versions_seen | counts.keys():
            self.runner_versions.labels(version).set(counts.get(version, 0))
        self._versions_seen |= counts.keys()

    def set_vms(self, group: str, counts: dict[str, int]) -> None:
        for state in InstanceState:
            self.vms.labels(group, state.value).set(counts.get(state.value, 0))

    def set_ages(self, group: str, oldest_vm: float, oldest_waiting: float, time_to_live: int) -> None:
        """The ages, in seconds, of a group's oldest active VM and oldest waiting job (0: none)."""
        self.oldest_vm.labels(group).set(oldest_vm)
        self.oldest_waiting.labels(group).set(oldest_waiting)
        self.time_to_live.labels(group).set(time_to_live)
