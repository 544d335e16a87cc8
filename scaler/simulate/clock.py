"""Virtual time: a clock the simulation moves, and the timeline of things due at given moments.

The agent, the JIT budget, the simulated cloud and the simulated GitHub all
read this one clock, so a month of history runs in seconds and the same seed
gives the same run.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class VirtualClock:
    """Seconds since the epoch that only move when the simulation says so.

    Callable (the agent's ``clock``) and with ``time``/``monotonic`` (the
    JIT budget's :class:`~scaler.github.ratelimit.Clock`); ``sleep`` only moves
    time on, so nothing ever blocks on it.
    """

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class Timeline:
    """Callbacks due at virtual times, run in time order (ties in the order they were scheduled)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(when, self.clock.now), next(self._seq), action))

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> int:
        """Run everything due by now (including what those callbacks schedule for now)."""
        ran = 0
        while self._heap and self._heap[0][0] <= self.clock.now:
            _, _, action = heapq.heappop(self._heap)
            action()
            ran += 1
        return ran
