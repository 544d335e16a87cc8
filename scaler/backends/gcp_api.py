"""A thin, careful Compute REST client: retries, operations, error mapping.

Kept apart from :mod:`scaler.backends.gcp` so the MIG logic there reads as
policy, and so the rules for talking to Compute live in one place:

* 429, 5xx, connection errors and timeouts are retried by tenacity with
  exponential backoff and jitter (injectable ``sleep``, ``clock`` and
  ``jitter``), at most ``retries`` times and never past an overall
  ``deadline``; mutations carry one ``requestId`` across retries so Compute
  applies them at most once.
* Any other 4xx is final and raised with Compute's own message, after
  scrubbing values the caller marked secret (Compute echoes invalid values).
* Operations are awaited with ``operations/{name}/wait`` (a server-side long
  poll: one call instead of many ``get``s) until ``DONE`` or a deadline.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from scaler.backends.base import BackendError, CreateFailure, Failure
from scaler.retries import stop_at_deadline, wait_equal_jitter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
T = TypeVar("T")


# Compute's per-instance error codes (operation errors, lastAttempt) in the backend vocabulary.
_CODE_FAILURES = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": Failure.CAPACITY,
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": Failure.CAPACITY,
    "RESOURCE_POOL_EXHAUSTED": Failure.CAPACITY,
    "QUOTA_EXCEEDED": Failure.QUOTA,
    "RESOURCE_NOT_FOUND": Failure.NOT_FOUND,
    "RESOURCE_ALREADY_EXISTS": Failure.CONFLICT,
    "CONDITION_NOT_MET": Failure.CONFLICT,
    "rateLimitExceeded": Failure.THROTTLED,
    "userRateLimitExceeded": Failure.THROTTLED,
    "quotaExceeded": Failure.QUOTA,
}


def failure_for(status: int, code: str = "") -> Failure:
    """Compute's HTTP status and error code (``reason``/``code``) in the backend vocabulary."""
    if code in _CODE_FAILURES:
        return _CODE_FAILURES[code]
    if status == 429:
        return Failure.THROTTLED
    if status >= 500 or status == 0:
        return Failure.UNAVAILABLE
    return {404: Failure.NOT_FOUND, 409: Failure.CONFLICT, 412: Failure.CONFLICT}.get(status, Failure.INVALID)


def create_failure(error: Mapping[str, Any]) -> CreateFailure:
    """One operation or ``lastAttempt`` error (``{"code", "message"}``) as a :class:`CreateFailure`."""
    code = str(error.get("code", "UNKNOWN"))
    reason = _CODE_FAILURES.get(code, Failure.UNKNOWN)
    return CreateFailure(reason, f"{code}: {error.get('message', '')}")


class ComputeHttpError(BackendError):
    """Compute answered an error; ``status`` and ``code`` are Compute's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Compute {status} {code}: {message}", reason=failure_for(status, code))
        self.status = status
        self.code = code


class _Transient(Exception):
    """An attempt that another may fix (429, 5xx, no answer); carries what to report if none does."""


class ComputeClient:
    def __init__(
        self,
        project: str,
        session: requests.Session,
        base_url: str,
        *,
        retries: int,
        backoff: float,
        timeout: float,
        operation_timeout: float,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        deadline: float = 120.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.project = project
        self.session = session
        self.base_url = base_url.rstrip("/")
        # What requests reads from the environment (proxies, CA bundle) is read once, here: on every
        # call it re-read the whole environment and looked for a .netrc, most of the agent's CPU per
        # metadata write (bench/burst.py). Only the Compute API's address is ever called.
        self._settings = session.merge_environment_settings(self.base_url, {}, None, None, None)
        session.trust_env = False
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.operation_timeout = operation_timeout
        self.sleep, self.clock = sleep, clock
        self.deadline, self.jitter = deadline, jitter

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        idempotent: bool = False,
        secrets: Iterable[str] = (),
    ) -> dict[str, Any]:
        """One API call with retries; ``idempotent`` adds a ``requestId`` reused by every retry."""
        url = f"{self.base_url}/projects/{self.project}/{path}"
        query = dict(params or {})
        if idempotent:
            query["requestId"] = str(uuid.uuid4())
        hidden = [s for s in secrets if len(s) >= 4]

        def attempt() -> dict[str, Any]:
            try:
                response = self.session.request(
                    method, url, params=query or None, json=body, timeout=self.timeout, **self._settings
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise _Transient(type(exc).__name__) from None
            if response.status_code < 400:
                result: dict[str, Any] = response.json() if response.content else {}
                return result
            status, reason, message = _error(response)
            if status not in RETRY_STATUSES:
                raise ComputeHttpError(status, reason, _scrub(message, hidden))
            raise _Transient(f"{status} {reason}: {_scrub(message, hidden)}")

        def give_up(state: RetryCallState) -> NoReturn:
            last = state.outcome.exception() if state.outcome is not None else None
            raise BackendError(
                f"Compute {method} {path} still failing after {state.attempt_number} attempts ({last})",
                reason=Failure.UNAVAILABLE,
            )

        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            wait=wait_equal_jitter(self.backoff, 30.0, self.jitter),
            stop=stop_after_attempt(self.retries + 1) | stop_at_deadline(self.deadline, self.clock),
            sleep=self.sleep,
            retry_error_callback=give_up,
        )
        return retrying(attempt)

    def wait(self, operation: dict[str, Any], *, raise_errors: bool = True) -> dict[str, Any]:
        """Wait for an Operation to be DONE; raise on its errors unless the caller reads them."""
        deadline = self.clock() + self.operation_timeout
        scope = "regions" if operation.get("region") else "zones"
        location = (operation.get("region") or operation.get("zone") or "").rsplit("/", 1)[-1]
        while operation.get("status") != "DONE":
            if self.clock() > deadline:
                raise BackendError(
                    f"operation {operation.get('name')} not done after {self.operation_timeout:.0f}s",
                    reason=Failure.UNAVAILABLE,
                )
            previous = operation.get("status")
            operation = self.call("POST", f"{scope}/{location}/operations/{operation['name']}/wait")
            if operation.get("status") == previous != "DONE":
                self.sleep(min(self.backoff, 1.0))  # the long poll came back early: do not spin
        errors = operation.get("error", {}).get("errors", [])
        if errors and raise_errors:
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
            raise BackendError(
                f"operation {operation.get('operationType')} failed: {detail}",
                reason=failure_for(0, str(errors[0].get("code", ""))),
                retryable=True,
            )
        return operation


def _error(response: requests.Response) -> tuple[int, str, str]:
    try:
        error = response.json()["error"]
        reason = (error.get("errors") or [{}])[0].get("reason", "") or error.get("status", "")
        return response.status_code, str(reason), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.status_code, "", response.text[:200]


def _scrub(message: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "[redacted]")
    return message


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def zone_of(instance_url: str) -> str:
    """``.../zones/europe-west4-a/instances/x`` -> ``europe-west4-a``."""
    parts = instance_url.split("/")
    return parts[parts.index("zones") + 1] if "zones" in parts[:-1] else ""
