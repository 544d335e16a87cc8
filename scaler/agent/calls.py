"""Every call the agent makes to a cloud or GitHub goes through here, counted for metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter

from scaler.agent.metrics import AgentMetrics
from scaler.backends.base import BackendError

T = TypeVar("T")


def github_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed GitHub call (GitHub's client and simulator errors both carry ``status``)."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def api_error_kind(exc: BaseException) -> str:
    """A short, bounded label for metrics and logs (never the message: it may quote a request)."""
    status = github_status(exc)
    if status is not None:
        return str(status)
    if isinstance(exc, BackendError):
        return str(exc.reason)
    return type(exc).__name__


class Calls:
    """Counts calls and errors by API and kind (``garo_api_calls_total``, ``garo_api_errors_total``)."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics
        self._counters: dict[tuple[str, str], Counter] = {}  # labelled once: the agent calls on every batch

    def __call__(self, api: str, name: str, fn: Callable[..., T], *args: Any) -> T:
        counter = self._counters.get((api, name))
        if counter is None:
            counter = self._counters[(api, name)] = self.metrics.api_calls.labels(api, name)
        counter.inc()
        try:
            return fn(*args)
        except Exception as exc:
            self.metrics.api_errors.labels(api, name, api_error_kind(exc)).inc()
            raise
