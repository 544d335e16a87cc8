"""The contract between the agent and a cloud.

The agent only ever needs five things from a cloud: create instances with names
it chose, delete instances by name, list what a group has, resume standby
instances, and write per-instance metadata (the JIT config, the job a VM runs).
Every backend (local, GCP, AWS) implements this and passes the same contract
suite in ``tests/contract/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# Per-instance metadata the agent writes and the boot agent reads (the VM's side of the contract).
JIT_KEY = "garo-jit-config"  # the single-use runner config: a secret, never listed back
JOB_KEY = "garo-job"  # the job a VM was made for (or runs)
REPO_KEY = "garo-repo"  # that job's repository, so an agent that restarted can ask GitHub about it
KEEP_KEY = "garo-keep"  # set by an operator (`garo keep`): "true" or a unix time; the agent deletes nothing kept
STATE_LABEL = "garo-state"  # what the boot agent reports: waiting, running, done, failed
SECRET_METADATA = frozenset({JIT_KEY})


class InstanceState(StrEnum):
    CREATING = "creating"  # requested; may not exist yet
    RUNNING = "running"  # booted (the runner may or may not have registered)
    STANDBY = "standby"  # suspended or stopped, ready to resume
    RESUMING = "resuming"
    DELETING = "deleting"
    FAILED = "failed"


@dataclass(frozen=True)
class Instance:
    name: str
    group: str
    state: InstanceState
    created_at: float  # unix seconds
    labels: Mapping[str, str] = field(default_factory=dict)
    zone: str = ""
    # The per-instance facts given to ``create`` (e.g. garo-job, garo-repo), read
    # back from the cloud so an agent that did not create the VM (a restart, a
    # replica) still knows what it was made for. Never the JIT config: a secret
    # is written only to the VM and never listed back.
    metadata: Mapping[str, str] = field(default_factory=dict)


class Failure(StrEnum):
    """Why a cloud refused, in words the agent acts on.

    Each backend maps its own codes onto these (GCE's ``ZONE_RESOURCE_POOL_EXHAUSTED``
    and EC2's ``InsufficientInstanceCapacity`` are both ``CAPACITY``), so the
    agent and the contract suite never see a cloud's vocabulary.
    """

    CAPACITY = "capacity"  # no machines of this shape here now: another pool, zone or type may have some
    QUOTA = "quota"  # the project's or account's limit: another pool may fit; an operator must raise it
    THROTTLED = "throttled"  # the API's rate limit: back off, then retry
    UNAVAILABLE = "unavailable"  # a server error or timeout: retry
    CONFLICT = "conflict"  # changed under us (a fingerprint, a concurrent writer): read again and retry
    NOT_FOUND = "not-found"  # the group or instance does not exist (or not yet)
    INVALID = "invalid-request"  # the request itself is wrong: retrying cannot help
    UNKNOWN = "unknown"


# Reasons after which the same request may succeed later.
RETRYABLE = frozenset({Failure.CAPACITY, Failure.QUOTA, Failure.THROTTLED, Failure.UNAVAILABLE, Failure.CONFLICT})
# Reasons after which another group (a fallback pool: other zones, types or provisioning model) may succeed.
FALLBACK = frozenset({Failure.CAPACITY, Failure.QUOTA})


@dataclass(frozen=True)
class CreateFailure:
    """One name the cloud refused to create."""

    reason: Failure
    detail: str = ""  # the cloud's own code and message, for logs (scrubbed of secrets)

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else str(self.reason)


@dataclass(frozen=True)
class CreateResult:
    """What happened to a create request, per name."""

    created: tuple[str, ...] = ()
    # Names the cloud refused (capacity, quota, ...): the agent retries them
    # later, or in the group's fallback pool when the reason is in FALLBACK.
    failed: Mapping[str, CreateFailure] = field(default_factory=dict)
    # Those of ``created`` that existed before this call (another replica's, or an earlier attempt's):
    # the caller did not make them, so it must not assume they still wait for their JIT config.
    existed: tuple[str, ...] = ()


class BackendError(RuntimeError):
    """A cloud call failed, for ``reason``; ``retryable`` tells the agent whether to back off and retry.

    ``retryable`` defaults from the reason; a backend overrides it where it knows
    better (an instance "not found" because the cloud is still creating it will
    exist shortly).
    """

    def __init__(self, message: str, *, reason: Failure, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = reason in RETRYABLE if retryable is None else retryable


class Backend(Protocol):
    def create(self, group: str, names: Sequence[str], metadata: Mapping[str, Mapping[str, str]]) -> CreateResult:
        """Create named instances in a group (idempotent: existing names are not duplicated)."""
        ...

    def delete(self, group: str, names: Sequence[str]) -> None:
        """Delete instances by name; names that no longer exist are ignored. Never resizes down."""
        ...

    def list(self, group: str) -> Sequence[Instance]:
        """Every instance the group has, in any state."""
        ...

    def resume_standby(self, group: str, count: int) -> Sequence[str]:
        """Resume up to `count` standby instances; return the names now resuming."""
        ...

    def set_metadata(self, group: str, name: str, items: Mapping[str, str]) -> None:
        """Merge metadata items into one instance (e.g. garo-jit-config, garo-job).

        An empty value removes the key: that is how the agent takes a used JIT
        config away from a VM that cannot delete its own metadata.
        """
        ...
