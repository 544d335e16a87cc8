"""Every setting of the webhook service, read from the environment in one place.

The service runs as a container behind a load balancer, so configuration is
environment variables (12-factor); secrets can come from a mounted file
(``*_FILE``) so that they never appear in ``ps`` or a deployment manifest.
Errors name the variable, never its value.

=============================== ======================================================
variable                        meaning (default)
=============================== ======================================================
GARO_WEBHOOK_SECRET(_FILE)      the GitHub webhook secret (required, one of the two)
GARO_WEBHOOK_SECRET_PREVIOUS    the secret being rotated out, also accepted (optional;
(_FILE)                         ``_FILE`` variant too)
GARO_ROUTES                     path to the routing table, JSON or YAML (required)
GARO_BUS                        ``sqlite://<path>[?synchronous=FULL&timeout=S&checkpoint=S]``
                                or ``pubsub://<project>/<topic>`` (``sqlite://.garo/bus.db``,
                                the agent's default too: see scaler.bus.url)
GARO_WEBHOOK_MAX_BODY           largest accepted body in bytes (1048576)
GARO_WEBHOOK_DEDUP_SIZE         recent delivery GUIDs remembered per worker (10000)
GARO_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (INFO)
GARO_WEBHOOK_BIND               gunicorn listen address (``0.0.0.0:$PORT``, PORT=8080)
GARO_WEBHOOK_WORKERS            gunicorn worker processes (2)
GARO_WEBHOOK_THREADS            threads per worker, gthread worker class (4)
PROMETHEUS_MULTIPROC_DIR        metrics directory shared by the workers (a fresh
                                temporary directory, created by gunicorn.conf.py)
=============================== ======================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scaler.bus.base import Publisher
from scaler.bus.url import DEFAULT_BUS, parse_bus_url
from scaler.config import ConfigError, Issue
from scaler.config.routing import RoutingTable, load_routing_table

DEFAULT_MAX_BODY = 1024 * 1024
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
    publisher: Publisher | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secrets or not all(self.secrets):
            raise ValueError("at least one non-empty webhook secret is required")


@dataclass(frozen=True)
class ServerSettings:
    """The gunicorn side, read by gunicorn.conf.py."""

    bind: str = "0.0.0.0:8080"
    workers: int = 2
    threads: int = 4


def _secret(env: Mapping[str, str], name: str, issues: list[Issue], required: bool) -> bytes | None:
    direct, file_name = env.get(name), env.get(f"{name}_FILE")
    if direct and file_name:
        issues.append(Issue(name, f"set either {name} or {name}_FILE, not both"))
        return None
    if file_name:
        try:
            value = Path(file_name).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            issues.append(Issue(f"{name}_FILE", f"cannot read the secret file: {exc.strerror}"))
            return None
        if not value:
            issues.append(Issue(f"{name}_FILE", "the secret file is empty"))
        return value or None
    if direct:
        return direct.encode()
    if required:
        issues.append(Issue(name, f"is required (or {name}_FILE)"))
    return None


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
    )


def server_settings_from_env(env: Mapping[str, str] | None = None) -> ServerSettings:
    env = os.environ if env is None else env
    issues: list[Issue] = []
    bind = env.get("GARO_WEBHOOK_BIND") or f"0.0.0.0:{env.get('PORT') or '8080'}"
    workers = _int(env, "GARO_WEBHOOK_WORKERS", 2, 1, issues)
    threads = _int(env, "GARO_WEBHOOK_THREADS", 4, 1, issues)
    if issues:
        raise ConfigError(issues, "webhook environment")
    return ServerSettings(bind=bind, workers=workers, threads=threads)
