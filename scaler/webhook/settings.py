"""Every setting of the webhook service, read from the environment in one place.

The service runs as a container behind a load balancer, so configuration is
environment variables (12-factor); secrets can come from a mounted file
(``*_FILE``) so that they never appear in ``ps`` or a deployment manifest.
Errors name the variable, never its value.

=============================== ======================================================
variable                        meaning (default)
=============================== ======================================================
GARO_WEBHOOK_SECRET(_FILE)      the GitHub webhook secret (required, one of the two;
                                at least 16 characters; a trailing newline is ignored)
GARO_WEBHOOK_SECRET_PREVIOUS    the secret being rotated out, also accepted (optional;
(_FILE)                         ``_FILE`` variant too)
GARO_ROUTES                     path to the routing table, JSON or YAML (required)
GARO_BUS                        ``sqlite://<path>[?synchronous=FULL&timeout=S&checkpoint=S]``
                                or ``pubsub://<project>/<topic>`` (``sqlite://.garo/bus.db``,
                                the agent's default too: see scaler.bus.url)
GARO_WEBHOOK_MAX_BODY           largest accepted body in bytes (1048576)
GARO_WEBHOOK_DEDUP_SIZE         recent deliveries remembered per worker (10000)
GARO_WEBHOOK_MAX_EVENT_AGE      seconds after which an event is refused (262800: GitHub's
                                3-day redelivery window plus an hour)
GARO_WEBHOOK_READ_TIMEOUT       seconds a client has to send a whole request (5)
GARO_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (INFO)
GARO_WEBHOOK_BIND               gunicorn listen address (``0.0.0.0:$PORT``, PORT=8080)
GARO_WEBHOOK_WORKERS            gunicorn worker processes (2)
GARO_WEBHOOK_THREADS            threads per worker, gthread worker class (16)
PROMETHEUS_MULTIPROC_DIR        metrics directory shared by the workers (a fresh
                                temporary directory, created by gunicorn.conf.py)
=============================== ======================================================
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scaler.bus.base import Publisher
from scaler.bus.url import DEFAULT_BUS, parse_bus_url
from scaler.config import ConfigError, Issue
from scaler.config.routing import RoutingTable, load_routing_table

DEFAULT_MAX_BODY = 1024 * 1024
MIN_SECRET = 16  # characters (bytes); GitHub accepts any secret, a short one can be guessed offline
# GitHub lets deliveries be redelivered for 3 days
# (docs.github.com/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks); an
# event older than that (plus an hour for delivery delays) is not something GitHub sends.
DEFAULT_MAX_EVENT_AGE = 3 * 24 * 3600 + 3600
DEFAULT_READ_TIMEOUT = 5.0
# Requests a worker serves at once. A thread waits while its event is published, so the
# workers x threads in flight bound the rate to about that many per publish round trip:
# 2 x 4 allowed 400/s at Pub/Sub's 20 ms; 2 x 16, 1,600/s. Waiting threads share Publish
# calls (scaler/bus/pubsub.py) and SQLite commits, so more of them cost less CPU per event.
# Slow clients hold no thread (scaler/webhook/worker.py).
DEFAULT_THREADS = 16
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class WebhookSettings:
    """What ``create_app`` needs. ``publisher`` overrides ``bus_url`` (tests, embedding)."""

    secrets: tuple[bytes, ...] = field(repr=False)
    routes: RoutingTable
    bus_url: str = DEFAULT_BUS
    max_body_bytes: int = DEFAULT_MAX_BODY
    dedup_size: int = 10_000
    log_level: str = "INFO"
    max_event_age: float = DEFAULT_MAX_EVENT_AGE
    publisher: Publisher | None = field(default=None, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secrets or any(secret_problem(s) for s in self.secrets):
            raise ValueError(f"every webhook secret must be at least {MIN_SECRET} characters, not only whitespace")


@dataclass(frozen=True)
class ServerSettings:
    """The gunicorn side, read by gunicorn.conf.py."""

    bind: str = "0.0.0.0:8080"
    workers: int = 2
    threads: int = DEFAULT_THREADS
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY


def secret_problem(secret: bytes) -> str | None:
    """What is wrong with a webhook secret, in words that do not repeat it (None: fine)."""
    if not secret.strip():
        return "is empty or only whitespace"
    if len(secret) < MIN_SECRET:
        return f"is shorter than {MIN_SECRET} characters (use e.g. `openssl rand -hex 32`)"
    return None


def _secret(env: Mapping[str, str], name: str, issues: list[Issue], required: bool) -> bytes | None:
    """The secret from ``name`` or ``name_FILE``, read the same way: one trailing newline is not part of it."""
    direct, file_name = env.get(name), env.get(f"{name}_FILE")
    if direct and file_name:
        issues.append(Issue(name, f"set either {name} or {name}_FILE, not both"))
        return None
    source = f"{name}_FILE" if file_name else name
    if file_name:
        try:
            value = Path(file_name).read_bytes()
        except OSError as exc:
            issues.append(Issue(source, f"cannot read the secret file: {exc.strerror}"))
            return None
    elif direct is not None and direct != "":
        value = direct.encode()
    else:
        if required:
            issues.append(Issue(name, f"is required (or {name}_FILE)"))
        return None
    # `echo secret > file` and `export X="$(cat file)"` differ by a newline; GitHub signs with neither.
    value = value.rstrip(b"\r\n")
    wrong = secret_problem(value)
    if wrong is not None:
        issues.append(Issue(source, f"the secret {wrong}"))
        return None
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, issues: list[Issue]) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        issues.append(Issue(name, f"expected an integer, got {raw!r}"))
        return default
    if value < minimum:
        issues.append(Issue(name, f"must be >= {minimum}, got {value}"))
    return value


def settings_from_env(env: Mapping[str, str] | None = None) -> WebhookSettings:
    """Read the webhook settings; raise ConfigError listing every bad variable."""
    env = os.environ if env is None else env
    issues: list[Issue] = []
    current = _secret(env, "GARO_WEBHOOK_SECRET", issues, required=True)
    previous = _secret(env, "GARO_WEBHOOK_SECRET_PREVIOUS", issues, required=False)
    routes: RoutingTable | None = None
    routes_path = env.get("GARO_ROUTES")
    if not routes_path:
        issues.append(Issue("GARO_ROUTES", "is required (path to the routing table)"))
    else:
        try:
            routes = load_routing_table(routes_path)
        except ConfigError as exc:
            issues.extend(Issue(f"GARO_ROUTES ({routes_path}) {i.path}", i.message) for i in exc.issues)
    bus_url = env.get("GARO_BUS") or DEFAULT_BUS
    try:
        parse_bus_url(bus_url)
    except ValueError as exc:
        issues.append(Issue("GARO_BUS", str(exc)))
    max_body = _int(env, "GARO_WEBHOOK_MAX_BODY", DEFAULT_MAX_BODY, 1024, issues)
    dedup_size = _int(env, "GARO_WEBHOOK_DEDUP_SIZE", 10_000, 0, issues)
    max_event_age = _int(env, "GARO_WEBHOOK_MAX_EVENT_AGE", DEFAULT_MAX_EVENT_AGE, 60, issues)
    log_level = (env.get("GARO_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        issues.append(Issue("GARO_LOG_LEVEL", f"expected one of {', '.join(LOG_LEVELS)}, got {log_level!r}"))
    if issues or current is None or routes is None:
        raise ConfigError(issues, "webhook environment")
    return WebhookSettings(
        secrets=(current, previous) if previous else (current,),
        routes=routes,
        bus_url=bus_url,
        max_body_bytes=max_body,
        dedup_size=dedup_size,
        log_level=log_level,
        max_event_age=max_event_age,
    )


def server_settings_from_env(env: Mapping[str, str] | None = None) -> ServerSettings:
    env = os.environ if env is None else env
    issues: list[Issue] = []
    bind = env.get("GARO_WEBHOOK_BIND") or f"0.0.0.0:{env.get('PORT') or '8080'}"
    workers = _int(env, "GARO_WEBHOOK_WORKERS", 2, 1, issues)
    threads = _int(env, "GARO_WEBHOOK_THREADS", DEFAULT_THREADS, 1, issues)
    read_timeout = _int(env, "GARO_WEBHOOK_READ_TIMEOUT", int(DEFAULT_READ_TIMEOUT), 1, issues)
    max_body = _int(env, "GARO_WEBHOOK_MAX_BODY", DEFAULT_MAX_BODY, 1024, issues)
    if issues:
        raise ConfigError(issues, "webhook environment")
    return ServerSettings(
        bind=bind, workers=workers, threads=threads, read_timeout=float(read_timeout), max_body_bytes=max_body
    )
