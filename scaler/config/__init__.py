"""The one configuration schema of Garo.

A department (or hub) stack is described by ``Pulumi.<stack>.yaml``. The Pulumi
program (``infra/``), the in-cluster agent (``scaler.agent``) and ``garo
validate`` all read it through :func:`load_stack_file` / :func:`parse_stack_config`
so that a mistake caught by one is caught by all. Every error names the key path
(``garo:groups[1].max``) because the people reading the error are reviewing a
pull request, not a stack trace.

Keys live in the ``garo:`` namespace; provider keys (``gcp:project``,
``aws:region``) are passed through untouched.
"""

from __future__ import annotations

from scaler.config.across import check_across_departments
from scaler.config.model import (
    NAMESPACE,
    SECRET_KEYS,
    Ami,
    ConfigError,
    GitHubSettings,
    HubSettings,
    Issue,
    NetworkSettings,
    RunnerApp,
    RunnerGroup,
    Secret,
    StackConfig,
    StandbyPool,
    WarmPool,
    WebhookApp,
)
from scaler.config.stack import load_stack_file, parse_stack_config

__all__ = [
    "NAMESPACE",
    "SECRET_KEYS",
    "Ami",
    "ConfigError",
    "GitHubSettings",
    "HubSettings",
    "Issue",
    "NetworkSettings",
    "RunnerApp",
    "RunnerGroup",
    "Secret",
    "StackConfig",
    "StandbyPool",
    "WarmPool",
    "WebhookApp",
    "check_across_departments",
    "load_stack_file",
    "parse_stack_config",
]
