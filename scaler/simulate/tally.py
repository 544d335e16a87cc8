"""What a run had counted at one instant, so that a piece of a history reports only its own window.

A piece of a long history (:mod:`scaler.simulate.pieces`) starts by replaying
the jobs still in flight where it begins, so that its cloud and its agent are
in the state a whole run would be in there. What that replay costs was
already counted by the piece before, so a piece's figures are the difference
between the tally where its window begins and the one where it ends: VM
seconds billed up to each instant, calls, VMs created, JIT configs, steps, and
the append-only logs sliced between them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from scaler.simulate.cloud import Usage


@dataclass(frozen=True)
class Tally:
    at: float
    vm_seconds: dict[str, float]
    standby_seconds: dict[str, float]
    cloud_calls: Counter[str]
    created: Counter[str]
    capacity_errors: int
    preemptions: int
    github_calls: Counter[str]
    jit_refused: int
    steps: int
    # Lengths of the append-only lists (usage.active_series, usage.log, jit times, events, GitHub requests) then.
    series: int
    log: int
    jit_times: int
    events: int
    requests: int
    unchanged: int  # of those, listing requests that repeated an unchanged listing

    @classmethod
    def of(
        cls, at: float, usage: Usage, github_calls: dict[str, int], jit_refused: int, jit_times: int, steps: int,
        events: int, requests: int, unchanged: int,
    ) -> Tally:  # fmt: skip
        """The tally of a run whose VMs are billed up to ``at`` (:meth:`SimCloud.bill_to_now`)."""
        return cls(
            at,
            dict(usage.vm_seconds),
            dict(usage.standby_seconds),
            Counter(usage.calls),
            Counter(usage.created),
            usage.capacity_errors,
            usage.preemptions,
            Counter(github_calls),
            jit_refused,
            steps,
            len(usage.active_series),
            len(usage.log),
            jit_times,
            events,
            requests,
            unchanged,
        )


def usage_between(usage: Usage, first: Tally, last: Tally) -> Usage:
    """The cloud's usage from ``first`` to ``last`` (both taken from this usage)."""
    return Usage(
        vm_seconds=_seconds_between(first.vm_seconds, last.vm_seconds),
        standby_seconds=_seconds_between(first.standby_seconds, last.standby_seconds),
        calls=last.cloud_calls - first.cloud_calls,
        capacity_errors=last.capacity_errors - first.capacity_errors,
        preemptions=last.preemptions - first.preemptions,
        created=last.created - first.created,
        active_series=usage.active_series[first.series : last.series],
        log=usage.log[first.log : last.log],
    )


def _seconds_between(first: dict[str, float], last: dict[str, float]) -> defaultdict[str, float]:
    return defaultdict(float, {group: seconds - first.get(group, 0.0) for group, seconds in last.items()})
