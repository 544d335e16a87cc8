"""The webhook intake: GitHub ``workflow_job`` events in, routed bus messages out.

Order of checks on ``POST /webhook``, cheapest and safest first: size (413,
before the body is read), signature over the raw bytes (401, before anything
parses them), content type (415), headers and JSON shape (400). Only then is
the job routed and published; the answer is 202 once the bus accepted the
message, 503 if it did not (GitHub shows the delivery as failed and
``garo redeliver`` sends it again).

De-duplication: there is no database of our own, so each worker remembers
what it published recently (bounded, in memory): the ``X-GitHub-Delivery``
GUID, and the event itself as the signature vouches for it (job id, action,
run attempt, all from the signed body). The GUID is not signed: a replay of
a captured delivery with a fresh GUID is still the same event, and is
answered ``duplicate``. Something is remembered only after a successful
publish, so GitHub's redelivery of a delivery that got 503 is published.
Events older than GitHub's redelivery window (judged from the body's own
timestamps) are refused: nothing legitimate sends them. What a worker's
memory misses (another worker, a restart) is caught by the embedded bus's
UNIQUE delivery column for GUID repeats, and by the agent, whose actions are
idempotent per job id (instance names derive from job ids).

With the embedded bus, the departments' subscriptions are created from the
routing table when the app starts (a message published before its
subscription exists would reach no one); until that succeeds, events for a
department without one are answered 503 rather than stored for nobody.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.logging import default_handler
from werkzeug.exceptions import HTTPException, InternalServerError

from scaler import logs
from scaler.bus.base import BusUnavailable, Publisher
from scaler.bus.url import open_publisher
from scaler.naming import valid_job_id
from scaler.webhook.metrics import CONTENT_TYPE, METRICS_PATH, WebhookMetrics
from scaler.webhook.settings import WebhookSettings, settings_from_env
from scaler.webhook.signature import verify

JOB_ACTIONS = frozenset({"queued", "waiting", "in_progress", "completed"})
JOB_TIMES = ("created_at", "started_at", "completed_at")
# /readyz says "not ready" this long after a publish failed (unless one succeeded since).
NOT_READY_AFTER_FAILURE = 30.0
OUTCOME_BY_STATUS = {400: "bad_request", 401: "bad_signature", 404: "not_found", 405: "method_not_allowed"}
OUTCOME_BY_STATUS |= {413: "too_large", 415: "unsupported_media_type", 500: "internal_error", 503: "bus_unavailable"}
LOGGER_NAME = "scaler.webhook"  # also the Flask app's name, so app.logger is this logger

bp = Blueprint("webhook", __name__)


class RecentDeliveries:
    """A bounded, thread-safe set of what this worker published: delivery GUIDs and event keys."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, delivery: object) -> bool:
        with self._lock:
            return delivery in self._seen

    def add(self, delivery: str) -> None:
        with self._lock:
            self._seen[delivery] = None
            self._seen.move_to_end(delivery)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)


class Intake:
    """Per-app state: settings, publisher, metrics, the recent-delivery cache.

    Everything a request needs is resolved here once (secrets, routes, the
    metric children per outcome), not per request.
    """

    def __init__(self, settings: WebhookSettings, publisher: Publisher) -> None:
        self.settings = settings
        self.secrets = settings.secrets
        self.routes = settings.routes
        self.publisher = publisher
        self.metrics = WebhookMetrics()
        self.recent = RecentDeliveries(settings.dedup_size)
        self.log = logs.configure(settings.log_level, LOGGER_NAME)
        self.clock = settings.clock
        self._outcomes: dict[str, Any] = {}  # outcome -> its child of garo_webhook_requests_total
        self._failed_at: float | None = None  # the last failed publish, None once one succeeded
        self._subscribed: set[str] = set()  # embedded bus: departments whose subscription exists
        self._subscription_lock = threading.Lock()

    def publish_failed(self) -> None:
        self._failed_at = self.clock()

    def publish_succeeded(self) -> None:
        self._failed_at = None

    def ready(self) -> bool:
        """The bus answers, and no publish failed in the last NOT_READY_AFTER_FAILURE seconds.

        A read probe alone says "ready" on a full disk while every publish
        fails; the recent failure says otherwise. The window (rather than
        "until a publish succeeds") lets a worker taken out of rotation come
        back and try again.
        """
        failed_at = self._failed_at
        if failed_at is not None and self.clock() - failed_at < NOT_READY_AFTER_FAILURE:
            return False
        return self.publisher.ready()

    def subscribed(self, department: str) -> bool:
        """Embedded bus: make sure ``department``'s subscription exists before publishing to it."""
        if department in self._subscribed or not hasattr(self.publisher, "create_subscription"):
            return True
        from scaler.bus.sqlite import department_subscription

        with self._subscription_lock:
            if department not in self._subscribed:
                name, filter = department_subscription(department)
                try:
                    self.publisher.create_subscription(name, filter)
                except (BusUnavailable, ValueError) as exc:
                    self.log.warning(
                        "cannot create the department's subscription on the embedded bus",
                        extra={"department": department, "error": type(exc).__name__},
                    )
                    return False
                self._subscribed.add(department)
        return True

    def count(self, outcome: str) -> None:
        child = self._outcomes.get(outcome)
        if child is None:  # created on first use, so /metrics lists only outcomes that happened
            child = self._outcomes[outcome] = self.metrics.requests.labels(outcome=outcome)
        child.inc()


def _intake() -> Intake:
    intake: Intake = current_app.extensions["garo_webhook"]
    return intake


def _answer(
    status: int,
    outcome: str,
    message: str = "",
    intake: Intake | None = None,
    error: BaseException | None = None,
    **fields: Any,
) -> tuple[Response, int]:
    """Count, log and answer in one place, so every response is all three.

    ``error`` is an unhandled exception behind a 500: its type and stack go
    into the same line (scaler.logs never writes its message).
    """
    if intake is None:
        intake = _intake()
    intake.count(outcome)
    level = logging.ERROR if error is not None else logging.WARNING if status >= 400 else logging.INFO
    if intake.log.isEnabledFor(level):
        delivery = request.environ.get("HTTP_X_GITHUB_DELIVERY", "")[:128]
        log_fields = {"outcome": outcome, "status": status, "delivery": delivery}
        log_fields |= {k: v for k, v in fields.items() if k != "message_id"}
        intake.log.log(level, message or outcome, extra=log_fields, exc_info=error)
    body = {"status": outcome} | ({"error": message} if status >= 400 else {}) | fields
    return Response(json.dumps(body), status=status, content_type="application/json"), status


_TOKEN_RE = re.compile(r"[!-~]{1,128}")  # visible ASCII: GitHub sends GUIDs and event names


def _printable(value: str | None, limit: int = 128) -> bool:
    return value is not None and len(value) <= limit and _TOKEN_RE.fullmatch(value) is not None


@bp.post("/webhook")
def webhook() -> tuple[Response, int]:
    intake = _intake()
    environ = request.environ  # headers straight from WSGI: one dict lookup each
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not verify(body, environ.get("HTTP_X_HUB_SIGNATURE_256"), intake.secrets):
        return _answer(401, "bad_signature", "missing or invalid X-Hub-Signature-256", intake)
    if environ.get("CONTENT_TYPE") != "application/json" and request.mimetype != "application/json":
        return _answer(
            415,
            "unsupported_media_type",
            "set the webhook's content type to application/json (form-encoded payload= is not accepted)",
            intake,
        )
    event, delivery = environ.get("HTTP_X_GITHUB_EVENT"), environ.get("HTTP_X_GITHUB_DELIVERY")
    if not _printable(event, 64) or not _printable(delivery):
        return _answer(400, "bad_request", "X-GitHub-Event and X-GitHub-Delivery headers are required", intake)
    assert event is not None and delivery is not None
    if event not in ("workflow_job", "ping"):
        return _answer(202, "ignored", "", intake, event=event)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        return _answer(400, "bad_request", "body is not valid JSON", intake)
    if not isinstance(payload, dict):
        return _answer(400, "bad_request", "body is not a JSON object", intake)
    if event == "ping":
        return _answer(200, "pong", "", intake, hook_id=payload.get("hook_id"))
    job = _read_job(payload)
    if isinstance(job, str):
        return _answer(400, "bad_request", job, intake)
    action, job_id = job.action, job.job_id
    fields: dict[str, Any] = {"action": action, "job_id": job_id, "repository": job.repository}
    if action not in JOB_ACTIONS:
        return _answer(202, "ignored", "", intake, **fields)
    age = intake.clock() - job.newest
    if age > intake.settings.max_event_age:
        message = f"event is {age / 3600:.0f} h old, older than GitHub's redelivery window; not published"
        return _answer(400, "stale_event", message, intake, **fields)
    event_key = f"event:{job_id}:{action}:{job.attempt}"  # what the signature vouches for
    if delivery in intake.recent or event_key in intake.recent:
        return _answer(202, "duplicate", "", intake, **fields)
    decision = intake.routes.match(job.org, job.repository, job.labels)
    if decision.route is None:
        if decision.outcome == "unmatched":
            intake.metrics.unmatched_jobs.labels(action=action).inc()
            return _answer(202, "unmatched", "no runner group has these labels", intake, labels=job.labels, **fields)
        return _answer(202, "github_hosted", "", intake, **fields)
    route = decision.route
    fields |= {"department": route.department, "group": route.group}
    attributes = {"department": route.department, "group": route.group, "action": action}
    attributes |= {"job_id": job_id, "delivery": delivery}
    if not intake.subscribed(route.department):
        intake.publish_failed()
        return _answer(
            503, "bus_unavailable", "the event bus has no subscription for it yet; retry later", intake, **fields
        )
    started = time.perf_counter()
    try:
        # No ordering key. It would order only what one publisher publishes, while GitHub
        # does not order its deliveries and several workers publish side by side; and on a
        # subscription with ordering on, a queued message the agent holds for capacity would
        # block that job's completed. The agent copes with any order (reconcile; docs/agent.md).
        message_id = intake.publisher.publish(body, attributes)
    except Exception as exc:  # a client library failing in a new way is still "bus down" to GitHub
        if not (isinstance(exc, BusUnavailable) and exc.contended):
            intake.publish_failed()  # readiness: a lock passes in moments, a full disk does not
        if not isinstance(exc, BusUnavailable):
            intake.log.exception("publish failed", extra=fields)
        return _answer(503, "bus_unavailable", "the event bus did not accept the event; retry later", intake, **fields)
    intake.publish_succeeded()
    intake.metrics.publish_seconds.observe(time.perf_counter() - started)
    intake.recent.add(delivery)
    intake.recent.add(event_key)
    return _answer(202, "published", "", intake, message_id=message_id, **fields)


@dataclass(frozen=True)
class Job:
    """What the intake reads from a signed ``workflow_job`` body."""

    action: str
    job_id: str
    org: str
    repository: str
    labels: list[str]
    attempt: str  # workflow_job.run_attempt, "" if absent
    newest: float  # the latest of the job's timestamps, seconds since the epoch


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()  # GitHub: 2023-04-19T21:12:12Z
    except ValueError:
        return None


def _read_job(payload: dict[str, Any]) -> Job | str:
    """The job's fields, or a message saying what is missing or out of range."""
    action, job, repo, org = (payload.get(k) for k in ("action", "workflow_job", "repository", "organization"))
    if not isinstance(action, str) or not isinstance(job, dict) or not isinstance(repo, dict):
        return "workflow_job events need action, workflow_job and repository"
    job_id, labels, full_name = job.get("id"), job.get("labels"), repo.get("full_name")
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        return "workflow_job.id must be an integer"
    if not valid_job_id(job_id):
        return "workflow_job.id must be between 1 and 2^63-1 (GitHub's ids are 64-bit)"
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return "workflow_job.labels must be a list of strings"
    if not isinstance(full_name, str) or full_name.count("/") != 1:
        return "repository.full_name must be owner/name"
    attempt = job.get("run_attempt")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1):
        return "workflow_job.run_attempt must be a positive integer"
    times = [t for t in (_timestamp(job.get(k)) for k in JOB_TIMES) if t is not None]
    if not times:
        return "workflow_job needs a created_at, started_at or completed_at timestamp"
    login = org.get("login") if isinstance(org, dict) else None
    owner = login if isinstance(login, str) and login else full_name.split("/")[0]
    return Job(action, str(job_id), owner, full_name, labels, str(attempt or ""), max(times))


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    return Response('{"status": "ok"}', mimetype="application/json"), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    ready = _intake().ready()
    body = json.dumps({"status": "ready" if ready else "bus_unavailable"})
    return Response(body, mimetype="application/json"), 200 if ready else 503


@bp.get(METRICS_PATH)
def metrics() -> Response:
    return Response(_intake().metrics.render(), mimetype=CONTENT_TYPE)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    """Every framework error (404, 405, 413, ...) as a short JSON body, counted."""
    status = exc.code or 400
    outcome = OUTCOME_BY_STATUS.get(status, "bad_request")
    original = exc.original_exception if isinstance(exc, InternalServerError) else None
    response, _ = _answer(status, outcome, exc.name, error=original)
    if status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response, status


class _WebhookFlask(Flask):
    def log_exception(self, exc_info: Any) -> None:
        """Not here: ``_http_error`` logs an unhandled error once, in the request's own JSON line."""


def create_app(config: WebhookSettings | None = None) -> Flask:
    """The WSGI app; without ``config`` every setting comes from the environment."""
    settings = config if config is not None else settings_from_env()
    publisher = settings.publisher if settings.publisher is not None else open_publisher(settings.bus_url)
    intake = Intake(settings, publisher)  # configures the JSON logger first, so Flask adds no handler of its own
    app = _WebhookFlask(LOGGER_NAME)
    app.logger.removeHandler(default_handler)  # Flask's plain-text handler, in case a host attached it
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["garo_webhook"] = intake
    for department in sorted({route.department for route in settings.routes.routes}):
        intake.subscribed(department)  # embedded bus: before the first event; retried per event if it failed
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    return app
