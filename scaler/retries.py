"""The retry policy pieces Garo's API clients share, as tenacity strategies.

tenacity runs the loops (GitHub in scaler.github.http, Compute in
scaler.backends.gcp_api, Pub/Sub in scaler.bus.pubsub); this module adds the
two pieces its stock strategies lack:

* :class:`wait_equal_jitter`: exponential backoff, half fixed and half random.
  tenacity's ``wait_random_exponential`` may draw a delay near zero, so a
  client can come straight back at a struggling server; here each wait is at
  least half the exponential delay, and many agents retrying at once spread
  over the other half. The random source is injectable so tests can pin it.
* :class:`stop_at_deadline`: an overall deadline on an injectable clock, so a
  test's fake clock decides it (tenacity's ``stop_before_delay`` reads
  ``time.monotonic``). It stops *before* a sleep that would end past the
  deadline, rather than sleeping and then giving up.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.stop import stop_base
from tenacity.wait import wait_base


def equal_jitter(attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay / 2 + delay / 2 * jitter()


class wait_equal_jitter(wait_base):
    def __init__(self, base: float, cap: float, jitter: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        return equal_jitter(retry_state.attempt_number, self.base, self.cap, self.jitter)


class stop_at_deadline(stop_base):
    """Stop when the coming sleep would end more than ``seconds`` after this object was made."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.deadline = clock() + seconds

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep > self.deadline
