"""Time and budget for GitHub calls: an injectable clock and the JIT-config limiter.

GitHub's secondary rate limit allows about 900 points per minute per endpoint
and a POST costs 5, so one App can create roughly 180 JIT configs a minute.
Going above that earns 403s that stall every department at once, so the agent
paces itself instead of discovering the limit the hard way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol


class Clock(Protocol):
    """Everything that waits or reads the time goes through this, so tests never sleep."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (GitHub's `x-ratelimit-reset` is epoch seconds)."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class JitBudget:
    """At most `per_minute` JIT-config POSTs in any 60-second window; thread-safe.

    A token bucket whose tokens come back exactly `window` seconds after they
    were spent. A classic bucket that starts full *and* refills continuously
    would let 2x the limit through in the first minute of a burst, which is
    exactly when the limit matters (1,000 queued jobs at once).
    """

    def __init__(self, per_minute: int = 180, clock: Clock | None = None, window: float = 60.0) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.window = window
        self._clock = clock or SystemClock()
        self._spent: deque[float] = deque()
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0] <= now - self.window:
            self._spent.popleft()

    def remaining(self) -> int:
        """JIT POSTs that can be made right now without waiting."""
        with self._lock:
            self._expire(self._clock.monotonic())
            return self.per_minute - len(self._spent)

    def wait_time(self) -> float:
        """Seconds until a token is free (0.0: one is free now); spends nothing."""
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now)
            if len(self._spent) < self.per_minute:
                return 0.0
            return max(self._spent[0] + self.window - now, 0.001)

    def try_acquire(self) -> float:
        """Spend a token if one is free and return 0.0; otherwise return the seconds to wait."""
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now)
            if len(self._spent) < self.per_minute:
                self._spent.append(now)
                return 0.0
            return max(self._spent[0] + self.window - now, 0.001)

    def etas(self, count: int) -> list[float]:
        """Seconds from now until each of the next ``count`` POSTs fits, if each is sent as soon as it fits.

        Exact for this window: the free tokens now, then each spent token when
        it comes back, then those again a window later. The agent tells a VM
        waiting for its config when to ask again from this (jit_endpoint).
        """
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now)
            return _schedule(count, [t + self.window - now for t in self._spent], self.per_minute, self.window)

    def acquire(self) -> float:
        """Block (on the injected clock) until a token is free; return the total time waited."""
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return waited
            self._clock.sleep(wait)
            waited += wait


def _schedule(count: int, returns: list[float], per_minute: int, window: float) -> list[float]:
    """The next ``count`` send times of one window: ``returns`` are the spent tokens' return times, oldest first."""
    cycle = [0.0] * (per_minute - len(returns)) + returns  # one window's tokens in the order they can be sent
    return [cycle[i % per_minute] + window * (i // per_minute) for i in range(max(0, count))]
