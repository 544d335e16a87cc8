"""Which backend serves which cloud: the one list the agent opens backends from.

A stack's ``garo:cloud`` names an entry here; its factory builds the backend
from the validated stack config and the agent's settings. Adding a cloud is
one module under ``scaler/backends/``, one entry in :data:`BACKENDS` and one
contract harness in ``tests/contract/harnesses.py`` under the same name
(docs/backends.md). Factories import their module late, so ``garo agent`` on
the local fleet never imports a cloud SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from scaler.backends.base import Backend, BackendError, Failure

if TYPE_CHECKING:
    from scaler.agent.settings import AgentSettings
    from scaler.config import StackConfig

BackendFactory = Callable[["StackConfig", "AgentSettings"], Backend]


def _local(config: StackConfig, settings: AgentSettings) -> Backend:
    """The simulated fleet of ``garo demo``, in ``GARO_FLEET_DIR`` (default ``.garo/fleet``)."""
    from scaler.backends.local import DEFAULT_STATE_DIR, LocalBackend

    return LocalBackend(settings.fleet_dir or DEFAULT_STATE_DIR)


def _gcp(config: StackConfig, settings: AgentSettings) -> Backend:
    """One MIG per group: named by ``GARO_POOLS`` as infra/ deployed them, else by convention."""
    from scaler.backends.gcp import GcpBackend, GcpGroup

    if not settings.pools:
        return GcpBackend.from_config(config)
    groups = {name: GcpGroup(pool.mig, pool.fallback) for name, pool in settings.pools.items()}
    time_to_start = {g.name: float(g.time_to_start) for g in config.groups}  # how long an unread JIT config is held
    return GcpBackend(config.project or "", config.region, groups, time_to_start=time_to_start)


def _aws(config: StackConfig, settings: AgentSettings) -> Backend:
    """One ASG per group (plus an on-demand fallback ASG); JIT configs pulled from the agent, else through S3."""
    from scaler.backends.aws import AwsBackend

    aws = settings.aws
    if aws is None:
        raise BackendError("an AWS department needs GARO_JIT_BUCKET and GARO_RUNNER_ROLE_ID", reason=Failure.INVALID)
    # As deployed: GARO_AWS_ASGS, else GARO_POOLS (infra/aws writes each group's ASG and on-demand ASG there).
    asgs = dict(aws.asgs) or {name: (pool.mig, pool.fallback) for name, pool in settings.pools.items()}
    agent_url = settings.jit.url if settings.jit is not None else ""  # else the S3 fallback (an older stack)
    return AwsBackend.from_config(
        config, jit_bucket=aws.jit_bucket, runner_role_id=aws.runner_role_id, asgs=asgs or None, agent_url=agent_url
    )


# cloud name (a stack's garo:cloud) -> factory. One line per backend.
BACKENDS: Mapping[str, BackendFactory] = {
    "local": _local,
    "gcp": _gcp,
    "aws": _aws,
}


def open_backend(config: StackConfig, settings: AgentSettings) -> Backend:
    """The backend for the stack's cloud; a cloud without one is a clear error, not a fallback."""
    factory = BACKENDS.get(config.cloud)
    if factory is None:
        raise BackendError(
            f"cloud {config.cloud!r} has no agent backend yet (known: {', '.join(sorted(BACKENDS))})",
            reason=Failure.INVALID,
        )
    return factory(config, settings)
