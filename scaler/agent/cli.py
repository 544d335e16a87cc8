"""``garo agent`` and ``garo reconcile``: wire config, bus, cloud and GitHub into an Agent.

What to run comes from :mod:`scaler.agent.settings` (the one reader of the
environment): the stack, the bus URL (parsed by :mod:`scaler.bus.url`), the
pools and the GitHub credential, which is read here and never logged. The
cloud's backend comes from :mod:`scaler.backends.registry`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scaler.agent.settings import AgentSettings, SettingsError, read_secret
from scaler.agent.settings import load as load_settings
from scaler.backends import registry as backends
from scaler.backends.base import Backend, BackendError
from scaler.bus.url import open_subscriber
from scaler.config import ConfigError
from scaler.config.model import Secret
from scaler.github.models import GitHubApi

if TYPE_CHECKING:
    from scaler.agent import Agent


def open_backend(settings: AgentSettings) -> Backend:
    """The stack's cloud, from the one registry of backends."""
    try:
        return backends.open_backend(settings.config, settings)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from None


def open_github(settings: AgentSettings, registry: Any = None) -> GitHubApi:
    """The GitHub client from the one credential the settings name (never logged)."""
    from scaler.github.auth import AppCredentials
    from scaler.github.client import GitHubClient
    from scaler.github.http import LOOP_RETRIES

    gh = settings.config.github
    token, key = settings.github_token, None
    if settings.github_secret:
        value = read_secret(settings.github_secret)
        if gh.app_id is not None and gh.private_key is not None:
            key = value
        else:
            token = value
    elif gh.app_id is not None and settings.github_key_file:
        key = Path(settings.github_key_file).read_text()
    groups = settings.config.listed_runner_groups
    if key is not None and gh.app_id is not None and gh.runner_app is not None:
        per_minute = gh.runner_app.jit_per_minute
        clients = [
            GitHubClient(
                gh.org,
                app=AppCredentials(app_id, app_key),
                installation_id=installation_id,
                repo=gh.runner_repository,
                api_url=gh.api_url,
                registry=registry if app_id == gh.app_id else None,
                jit_per_minute=per_minute,
                runner_groups=groups,
                **LOOP_RETRIES,
            )
            for app_id, installation_id, app_key in [
                (gh.app_id, gh.installation_id, key),
                *((a.app_id, a.installation_id, _additional_key(a.private_key)) for a in gh.runner_app.additional),
            ]
        ]
        if len(clients) == 1:
            return clients[0]
        from scaler.github.apps import RunnerApps, RunnerAppSlot

        return RunnerApps([RunnerAppSlot(f"app-{c.app_id}", c, c.jit_budget, c.hourly_remaining) for c in clients])
    if token:
        return GitHubClient(
            gh.org,
            token=token,
            repo=gh.runner_repository,
            api_url=gh.api_url,
            registry=registry,
            runner_groups=groups,
            **LOOP_RETRIES,
        )
    raise click.ClickException(
        "set GARO_GITHUB_SECRET, GARO_GITHUB_TOKEN, or GARO_GITHUB_APP_KEY_FILE with github.runnerApp in the stack"
    )


def _additional_key(secret: Secret | None) -> str:
    """An additional runner App's key, from where its reference points (never logged)."""
    if secret is None or secret.kind == "pulumi":
        raise click.ClickException(
            "an additional runner App's privateKey must be {secretManager: ...}, {env: ...} or {file: ...}"
        )
    if secret.kind == "secret-manager":
        return read_secret(secret.ref)
    if secret.kind == "env":
        value = os.environ.get(secret.ref)
        if not value:
            raise click.ClickException(f"{secret.ref} (an additional runner App's key) is not set")
        return value
    return Path(secret.ref).read_text()


def _settings(stack: str | None, bus: str | None = None) -> AgentSettings:
    try:
        return load_settings(os.environ, stack, bus)
    except (SettingsError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None


ONCE_TIMEOUT = 120.0


def run_agent(stack: str | None, bus: str | None, metrics_port: int | None, log_level: str, once: bool = False) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from scaler.agent import Agent
    from scaler.logs import configure

    configure(log_level)
    settings = _settings(stack, bus)
    config = settings.config
    registry = CollectorRegistry()
    agent = Agent(
        config,
        open_backend(settings),
        open_github(settings, registry),
        open_subscriber(settings.bus, config.department),
        registry=registry,
    )
    from scaler.agent.jit_endpoint import start_for

    start_for(agent.executor.backend, settings)  # GCP: runner VMs pull their JIT configs here
    if once:
        sys.exit(_run_once(agent))
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)
    stop = threading.Event()
    try:
        agent.run_forever(stop)
    except KeyboardInterrupt:
        stop.set()


def _run_once(agent: Agent, timeout: float = ONCE_TIMEOUT) -> int:
    """Reconcile, take one batch and see it through: 0 once every message is acknowledged.

    A queued job is acknowledged only when its VM exists and has its config,
    which takes a boot; messages still waiting at the deadline go back to the
    bus at once (nothing is lost) and the exit code says so.
    """
    agent.step()
    deadline = time.monotonic() + timeout
    while agent.held and time.monotonic() < deadline:
        time.sleep(0.5)
        agent.run_once()
    if agent.held:
        click.echo(f"{agent.hand_back()} message(s) still wait for capacity; handed back to the bus", err=True)
        return 3
    return 0


def run_reconcile(stack: str | None, dry_run: bool) -> None:
    from scaler.agent import Agent

    settings = _settings(stack)

    class _NoBus:
        def pull(self, max_messages: int = 100, timeout: float = 1.0) -> list[Any]:
            return []

        def ack(self, ack_ids: Any) -> None: ...

        def modify_ack_deadline(self, ack_ids: Any, seconds: int) -> None: ...

    agent = Agent(settings.config, open_backend(settings), open_github(settings), _NoBus())
    click.echo(str(agent.reconcile(dry_run=dry_run)))


def _stack_settings(stack: str | Path | None) -> AgentSettings:
    return _settings(str(stack) if stack is not None else None)


def run_status(stack: Path | None, metrics_url: str | None, as_json: bool) -> None:
    """The agent's metrics if it answers; else the cloud and GitHub directly, labelled as such."""
    import requests

    from scaler import status as st

    settings = _stack_settings(stack)
    url = metrics_url or f"http://127.0.0.1:{os.environ.get('GARO_METRICS_PORT', '9100')}/metrics"
    now = time.time()
    try:
        result = st.from_metrics(settings.config, st.read_metrics(url), url, now)
    except requests.RequestException as exc:
        why = f"{url}: {type(exc).__name__}"
        try:
            github: GitHubApi | None = open_github(settings)
        except click.ClickException as exc2:
            github, why = None, f"{why}; GitHub not read ({exc2.message})"
        try:
            runners = github.list_runners if github is not None else list
            result = st.from_cloud(settings.config, open_backend(settings), runners, now, why)
        except (click.ClickException, BackendError) as exc2:
            raise click.ClickException(
                f"the agent is unreachable ({why}); cannot read the cloud and GitHub either: {exc2}"
            ) from None
    click.echo(result.to_json() if as_json else st.render_table(result), nl=not as_json)


def run_keep(vm: str, stack: str | None, duration: str, release: bool) -> None:
    """Write ``garo-keep`` (a unix time, or "" to release) through the backend; the listing shows it."""
    from scaler import naming
    from scaler.backends.base import KEEP_KEY
    from scaler.github.deliveries import parse_duration

    settings = _stack_settings(stack)
    config = settings.config
    group = naming.group_of(config.department, [g.name for g in config.groups], vm)
    if group is None:
        raise click.UsageError(f"{vm!r} is not a VM of department {config.department!r}")
    spec = config.group(group)
    value = ""
    if not release:
        try:
            seconds = parse_duration(duration).total_seconds()
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if seconds > spec.keep_for:
            raise click.UsageError(f"--for {duration} is longer than group {group!r} allows (keepFor {spec.keep_for}s)")
        value = str(int(time.time() + seconds))
    try:
        open_backend(settings).set_metadata(group, vm, {KEEP_KEY: value})
    except BackendError as exc:
        raise click.ClickException(f"cannot write the keep on {vm}: {exc}") from None
    if release:
        click.echo(f"{vm}: keep released; the agent may delete it again")
    else:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(value)))
        click.echo(f"{vm}: kept until {until} (group {group}; at most timeToLive + keepFor after it was created)")
