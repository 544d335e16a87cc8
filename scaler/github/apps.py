"""Several runner Apps with the same scope, used as one: JIT throughput beyond one App's limits.

GitHub limits every App installation in two windows. The secondary limit lets
one App create about 180 JIT configs a minute; the installation's hourly core
limit (5,000 to 15,000 requests) caps everything else it does too, so at
5,000 an hour an App averages only ~83 calls a minute. A department that needs
more configs than that installs more runner Apps with the same scope (same
organisation or repository, same permissions) and lists them under
``garo:github.runnerApp.additional``.

:class:`RunnerApps` spreads JIT creation over them: each config goes to the App
with the most room in *both* windows (its own :class:`JitBudget`, and the
hourly remainder from GitHub's ``x-ratelimit-*`` headers or ``GET
/rate_limit``, which costs nothing, less a reserve for the agent's other
calls). No App is ever sent more than its own budget allows: each App's client
spends its own budget, and :class:`PooledJitBudget` only reports the sum. Reads
(runner listings, job checks) and deregistrations go to the App with the most
hourly room: a runner registered through one App can be removed through any
App installed with the same scope.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scaler.github.models import GitHubApi, GitHubError, JitConfig, Job, Runner, RunnerGroupApi, RunnerGroupInfo
from scaler.github.ratelimit import Clock, JitBudget

log = logging.getLogger(__name__)
HOURLY_RESERVE = 200  # hourly requests kept back per App for listings, job checks and deregistrations


@dataclass
class RunnerAppSlot:
    """One App: its client, the JIT budget that client spends, and its hourly remainder (None: unknown)."""

    name: str  # for logs and metrics only, e.g. "app-12345"
    api: GitHubApi
    jit: JitBudget
    hourly_remaining: Callable[[], int | None] = lambda: None

    def jit_room(self, reserve: int) -> int:
        """JIT POSTs this App can take now without breaking either window."""
        room = self.jit.remaining()
        hourly = self.hourly_remaining()
        return room if hourly is None else min(room, hourly - reserve)


class PooledJitBudget(JitBudget):
    """The pool's JIT budgets as one: what is left is the sum of what each App can still take now."""

    def __init__(self, apps: RunnerApps, clock: Clock | None = None) -> None:
        super().__init__(sum(slot.jit.per_minute for slot in apps.slots), clock=clock)
        self._apps = apps

    def remaining(self) -> int:
        return sum(max(0, slot.jit_room(self._apps.reserve)) for slot in self._apps.slots)

    def etas(self, count: int) -> list[float]:
        """The Apps' send times merged: the pool sends each config on whichever App is free first."""
        merged = heapq.merge(*(slot.jit.etas(count) for slot in self._apps.slots))
        return list(itertools.islice(merged, max(0, count)))

    def try_acquire(self) -> float:
        """Never spends: each App's client spends its own budget when it posts."""
        if self.remaining() > 0:
            return 0.0
        return max(min(slot.jit.wait_time() for slot in self._apps.slots), 0.001)


class RunnerApps:
    """Implements :class:`GitHubApi` over several Apps of the same scope."""

    def __init__(self, slots: Sequence[RunnerAppSlot], *, reserve: int = HOURLY_RESERVE) -> None:
        if not slots:
            raise ValueError("RunnerApps needs at least one App")
        self.slots = tuple(slots)
        self.reserve = reserve
        self.jit_budget: JitBudget = PooledJitBudget(self)
        self.jit_counts: dict[str, int] = {slot.name: 0 for slot in self.slots}
        # One JIT request in flight per App (GitHub asks for serial requests per installation),
        # so the executor may run as many at once as there are Apps with room.
        self._busy: set[str] = set()
        self._idle = threading.Condition()

    @property
    def jit_concurrency(self) -> int:
        """JIT requests worth sending at once: one per App with room in both windows."""
        return max(1, sum(1 for slot in self.slots if slot.jit_room(self.reserve) > 0))

    def _take_roomiest(self) -> RunnerAppSlot:
        """The idle App with the most JIT room, marked busy.

        Waits while no idle App has room but a busy one does (it will be free
        soon); if no App has room at all, the roomiest idle one is taken and its
        own budget makes the caller wait, as with a single App.
        """
        with self._idle:
            while True:
                idle = [s for s in self.slots if s.name not in self._busy]
                rooms = {s.name: s.jit_room(self.reserve) for s in self.slots}
                if idle and (any(rooms[s.name] > 0 for s in idle) or not any(v > 0 for v in rooms.values())):
                    break
                self._idle.wait()
            slot = max(idle, key=lambda s: rooms[s.name])
            self._busy.add(slot.name)
            return slot

    def _release(self, slot: RunnerAppSlot, generated: bool) -> None:
        with self._idle:
            self._busy.discard(slot.name)
            self.jit_counts[slot.name] += generated
            self._idle.notify()

    def _readiest(self) -> RunnerAppSlot:
        return max(self.slots, key=lambda slot: slot.hourly_remaining() or 0)

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
        slot = self._take_roomiest()
        generated = False
        try:
            jit = slot.api.generate_jit_config(name, runner_group_id, labels)
            generated = True
            return jit
        finally:
            self._release(slot, generated)

    def list_runners(self) -> Sequence[Runner]:
        return self._readiest().api.list_runners()

    def delete_runner(self, runner_id: int) -> None:
        self._readiest().api.delete_runner(runner_id)

    def get_job(self, repo_full_name: str, job_id: int) -> Job:
        return self._readiest().api.get_job(repo_full_name, job_id)

    # The priority classes' runner groups (scaler.github.runner_groups): any App of the pool may manage them.

    def _groups_api(self) -> RunnerGroupApi:
        api = self._readiest().api
        if not isinstance(api, RunnerGroupApi):
            raise GitHubError(None, "this App's client cannot manage runner groups")
        return api

    def list_runner_groups(self) -> Sequence[RunnerGroupInfo]:
        return self._groups_api().list_runner_groups()

    def repository_ids(self) -> Mapping[str, int]:
        return self._groups_api().repository_ids()

    def create_runner_group(self, name: str, repository_ids: Sequence[int], workflows: Sequence[str]) -> int:
        return self._groups_api().create_runner_group(name, repository_ids, workflows)

    def update_runner_group(
        self, group_id: int, name: str, repository_ids: Sequence[int], workflows: Sequence[str]
    ) -> None:
        self._groups_api().update_runner_group(group_id, name, repository_ids, workflows)

    def watch_runner_groups(self, ids: Sequence[int]) -> None:
        """Every App lists runners: each lists the class groups too."""
        for slot in self.slots:
            if isinstance(slot.api, RunnerGroupApi):
                slot.api.watch_runner_groups(ids)


__all__ = ["GitHubError", "PooledJitBudget", "RunnerAppSlot", "RunnerApps"]
