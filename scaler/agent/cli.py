"""``garo agent`` and ``garo reconcile``: wire config, bus, cloud and GitHub into an Agent.

Everything is chosen from the department's stack file (``--stack`` or
``GARO_STACK_FILE``) plus one bus URL (``--bus`` or ``GARO_BUS``):
``sqlite:///path/to/bus.db`` (embedded) or ``pubsub://project/subscription``.
The GitHub credential comes from the environment (``GARO_GITHUB_TOKEN`` for
development, or ``GARO_GITHUB_APP_KEY_FILE`` with the App id from the stack);
it is read here and never logged.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import click

from scaler.backends.base import Backend
from scaler.bus.base import Subscriber
from scaler.config import StackConfig, load_stack_file
from scaler.github.models import GitHubApi


def open_subscriber(url: str, department: str) -> Subscriber:
    """The department's subscription named by a bus URL."""
    if url.startswith("sqlite://"):
        from scaler.bus.sqlite import SqliteBus

        path = url.removeprefix("sqlite://") or ".garo/bus.db"
        return SqliteBus(path, subscription=f"agent-{department}", filter={"department": department})
    if url.startswith("pubsub://"):
        from scaler.bus.pubsub import PubSubSubscriber

        project, _, subscription = url.removeprefix("pubsub://").partition("/")
        if not project or not subscription:
            raise click.BadParameter("expected pubsub://<project>/<subscription>", param_hint="--bus")
        return PubSubSubscriber(project, subscription)
    raise click.BadParameter(f"unknown bus URL scheme in {url.split(':', 1)[0]!r}", param_hint="--bus")


def open_backend(config: StackConfig) -> Backend:
    if config.cloud == "local":
        from scaler.backends.local import DEFAULT_STATE_DIR, LocalBackend

        return LocalBackend(os.environ.get("GARO_FLEET_DIR", str(DEFAULT_STATE_DIR)))
    if config.cloud == "gcp":
        from scaler.backends.gcp import GcpBackend

        return GcpBackend.from_config(config)
    raise click.ClickException(f"cloud {config.cloud!r} has no agent backend yet")


def open_github(config: StackConfig, registry: Any = None) -> GitHubApi:
    from scaler.github.auth import AppCredentials
    from scaler.github.client import GitHubClient

    settings = config.github
    token = os.environ.get("GARO_GITHUB_TOKEN")
    key_file = os.environ.get("GARO_GITHUB_APP_KEY_FILE")
    if settings.app_id is not None and key_file:
        app = AppCredentials(settings.app_id, Path(key_file).read_text())
        return GitHubClient(
            settings.org, app=app, installation_id=settings.installation_id, api_url=settings.api_url, registry=registry
        )
    if token:
        return GitHubClient(settings.org, token=token, api_url=settings.api_url, registry=registry)
    raise click.ClickException("set GARO_GITHUB_TOKEN, or GARO_GITHUB_APP_KEY_FILE with github.appId in the stack")


def _load(stack: str | None) -> StackConfig:
    path = stack or os.environ.get("GARO_STACK_FILE")
    if not path:
        raise click.UsageError("give --stack or set GARO_STACK_FILE")
    config = load_stack_file(path)
    if config.kind != "department":
        raise click.UsageError(f"{path} is a hub stack; the agent runs per department")
    return config


def run_agent(stack: str | None, bus: str | None, metrics_port: int | None, log_level: str) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from scaler.agent import Agent
    from scaler.agent.logs import configure

    configure(log_level)
    config = _load(stack)
    registry = CollectorRegistry()
    agent = Agent(
        config,
        open_backend(config),
        open_github(config, registry),
        open_subscriber(bus or os.environ.get("GARO_BUS", "sqlite://.garo/bus.db"), config.department),
        registry=registry,
    )
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    stop = threading.Event()
    try:
        agent.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


def run_reconcile(stack: str | None, dry_run: bool) -> None:
    from scaler.agent import Agent

    config = _load(stack)

    class _NoBus:
        def pull(self, max_messages: int = 100, timeout: float = 1.0) -> list[Any]:
            return []

        def ack(self, ack_ids: Any) -> None: ...

        def modify_ack_deadline(self, ack_ids: Any, seconds: int) -> None: ...

    agent = Agent(config, open_backend(config), open_github(config), _NoBus())
    click.echo(str(agent.reconcile(dry_run=dry_run)))
