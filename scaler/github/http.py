"""One place where Garo talks HTTP to GitHub: retries, rate limits, metrics, errors.

Why centralised: the agent and the redelivery sweeper must both back off the
same way (GitHub punishes clients that hammer it after a 403), count calls the
same way for on-call, and never let a token into an exception or a log line.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from scaler.github.models import GitHubError
from scaler.github.ratelimit import Clock, SystemClock
from scaler.retries import equal_jitter, stop_at_deadline

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.github+json, application/json"
API_VERSION = "2022-11-28"


@dataclass
class RateLimitState:
    """The last `x-ratelimit-*` headers GitHub sent (primary limit, per installation)."""

    remaining: int | None = None
    limit: int | None = None
    reset: float | None = None  # epoch seconds


class GitHubMetrics:
    """Prometheus metrics for one client, in a registry the caller owns (no global registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.calls = Counter(
            "garo_github_api_calls",
            "GitHub API calls by endpoint template and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.ratelimit_remaining = Gauge(
            "garo_github_ratelimit_remaining", "Last x-ratelimit-remaining seen from GitHub", registry=self.registry
        )
        self.jit_budget = Gauge(
            "garo_github_jit_budget_remaining",
            "JIT-config POSTs allowed right now by the local budget",
            registry=self.registry,
        )


#: ``GitHubHttp`` options for a caller that retries from the truth on its next pass anyway (the
#: agent's loop): a few quick tries for a 5xx, so one failing endpoint does not hold every other
#: action (deleting finished VMs above all) for the 7-15 s that five tries with 1 s backoff take.
#: Rate-limit waits stay what GitHub asks for: calling again sooner would only prolong the limit.
LOOP_RETRIES: dict[str, Any] = {"max_attempts": 3, "backoff_base": 0.25, "backoff_cap": 1.0}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class GitHubHttp:
    """Sends requests to a GitHub API base URL with retries and rate-limit handling.

    tenacity runs the retries; each attempt sorts GitHub's answer:

    * 5xx and connection errors: up to `max_attempts` tries, exponential backoff with jitter.
    * 403/429 that are rate limits: wait what `Retry-After` / `x-ratelimit-reset` say
      (at most `max_rate_limit_wait` seconds, at most `max_rate_limit_retries` times;
      such a wait is not a failed attempt).
    * any other 4xx: raise at once; retrying cannot fix a bad request.
    * whatever the reason, no sleep ends more than `deadline` seconds after the
      first attempt: the caller gets the last error instead.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None = None,
        clock: Clock | None = None,
        metrics: GitHubMetrics | None = None,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        max_rate_limit_retries: int = 3,
        max_rate_limit_wait: float = 900.0,
        deadline: float = 1200.0,
        timeout: float = 30.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.clock = clock or SystemClock()
        self.metrics = metrics or GitHubMetrics()
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_rate_limit_wait = max_rate_limit_wait
        self.deadline = deadline
        self.timeout = timeout
        self.jitter = jitter
        self.rate_limit = RateLimitState()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GitHubHttp({self.base_url!r})"

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): half fixed, half random ("equal jitter")."""
        return equal_jitter(attempt, self.backoff_base, self.backoff_cap, self.jitter)

    def _record(self, response: requests.Response) -> None:
        h = response.headers
        remaining, limit, reset = (
            _int(h.get("x-ratelimit-remaining")),
            _int(h.get("x-ratelimit-limit")),
            _int(h.get("x-ratelimit-reset")),
        )
        with self._lock:
            if remaining is not None:
                self.rate_limit.remaining = remaining
                self.metrics.ratelimit_remaining.set(remaining)
            if limit is not None:
                self.rate_limit.limit = limit
            if reset is not None:
                self.rate_limit.reset = float(reset)

    def rate_limit_wait(self, response: requests.Response) -> float | None:
        """Seconds GitHub asks us to wait, or None if this 403/429 is not a rate limit."""
        h = response.headers
        retry_after = h.get("retry-after")
        if retry_after is not None:
            seconds = _int(retry_after.strip())
            return float(seconds) if seconds is not None and seconds >= 0 else 60.0
        if h.get("x-ratelimit-remaining") == "0" and _int(h.get("x-ratelimit-reset")) is not None:
            return max(float(_int(h.get("x-ratelimit-reset")) or 0) - self.clock.time(), 0.0) + 1.0
        if response.status_code == 429 or "rate limit" in _message(response).lower():
            return 60.0  # GitHub's advice for a secondary limit without headers: wait a minute
        return None

    def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        auth: Callable[[], str],
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send `method path` and return the 2xx/3xx/404 response; raise GitHubError otherwise.

        `endpoint` is the path template (metrics label); `auth` returns the
        Authorization header value and is called per attempt so a refreshed
        token is picked up. 404 is returned, not raised, because for DELETE it
        means "already gone"; callers that need the resource call `raise_for`.
        `headers` are sent besides the standard ones (``If-None-Match`` for a
        conditional GET, whose 304 is returned like any other answer below 400).
        """
        tries = _Tries()
        retrying = Retrying(
            retry=retry_if_exception_type(_Again),
            wait=lambda state: self._wait(_again(state), tries),
            stop=stop_at_deadline(self.deadline, self.clock.monotonic),
            sleep=self.clock.sleep,
            before_sleep=lambda state: log.warning(
                "github %s %s: %s, retry in %.1fs", method, endpoint, _again(state).why, state.upcoming_sleep
            ),
            retry_error_callback=self._give_up,
        )
        return retrying(self._attempt, tries, method, path, endpoint, auth, json, params, headers)

    def _attempt(
        self,
        tries: _Tries,
        method: str,
        path: str,
        endpoint: str,
        auth: Callable[[], str],
        json: Any,
        params: Mapping[str, str | int] | None,
        extra: Mapping[str, str] | None,
    ) -> requests.Response:
        """One try: the response, or GitHubError (final) or _Again (worth another try)."""
        headers = {**(extra or {}), "Accept": ACCEPT, "X-GitHub-Api-Version": API_VERSION, "Authorization": auth()}
        try:
            response = self.session.request(
                method, self.base_url + path, headers=headers, json=json, params=params, timeout=self.timeout
            )
        except requests.RequestException as exc:
            self.metrics.calls.labels(endpoint, "error").inc()
            tries.failed += 1
            error = GitHubError(None, f"{type(exc).__name__} after {tries.failed} attempts", method=method, path=path)
            if tries.failed >= self.max_attempts:
                raise error from None
            raise _Again(error, type(exc).__name__) from None
        status = response.status_code
        self.metrics.calls.labels(endpoint, str(status)).inc()
        self._record(response)
        if status < 400 or status == 404:
            return response
        error = GitHubError(status, _message(response), method=method, path=path)
        if status >= 500:
            tries.failed += 1
            if tries.failed < self.max_attempts:
                raise _Again(error, str(status))
            raise error
        wait = self.rate_limit_wait(response) if status in (403, 429) else None
        if wait is None:
            raise error
        tries.limited += 1
        if tries.limited > self.max_rate_limit_retries or wait > self.max_rate_limit_wait:
            raise GitHubError(
                status,
                f"rate limited ({error.message}); asked to wait {wait:.0f}s, giving up after {tries.limited - 1} waits",
                method=method,
                path=path,
            )
        raise _Again(error, f"rate limited ({status})", wait)

    def _wait(self, again: _Again, tries: _Tries) -> float:
        """What GitHub asked for, else backoff by the count of failed attempts (rate-limit waits aside)."""
        return again.wait if again.wait is not None else self.backoff(tries.failed)

    def _give_up(self, state: RetryCallState) -> NoReturn:
        """The deadline came first: raise the last attempt's error, saying so."""
        error = _again(state).error
        raise GitHubError(
            error.status,
            f"{error.message}; gave up at the {self.deadline:.0f}s deadline",
            method=error.method,
            path=error.path,
        )


@dataclass
class _Tries:
    """One request's count of failed attempts and of rate-limit waits, kept apart."""

    failed: int = 0
    limited: int = 0


class _Again(Exception):
    """An attempt another may fix; `wait` is what GitHub asked for (None: back off)."""

    def __init__(self, error: GitHubError, why: str, wait: float | None = None) -> None:
        super().__init__(why)
        self.error, self.why, self.wait = error, why, wait


def _again(state: RetryCallState) -> _Again:
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, _Again)  # tenacity retries only _Again
    return exc


def _message(response: requests.Response) -> str:
    """GitHub's own error message, bounded; never the request (which held the credentials)."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:200]
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return str(response.reason or "")[:200]


def raise_for(response: requests.Response, method: str, path: str) -> None:
    """Raise GitHubError for any non-2xx response."""
    if response.status_code >= 300:
        raise GitHubError(response.status_code, _message(response), method=method, path=path)
