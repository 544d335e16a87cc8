"""What the agent knows about GitHub, independent of how it is fetched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class JitConfig:
    """A single-use runner registration. `encoded` is a secret: never log it."""

    runner_id: int
    runner_name: str
    encoded: str = field(repr=False)


@dataclass(frozen=True)
class Runner:
    id: int
    name: str
    status: str  # "online" | "offline"
    busy: bool
    labels: tuple[str, ...] = ()
    version: str | None = None  # the runner software's version; None until it has connected once


@dataclass(frozen=True)
class RunnerGroupInfo:
    """An organisation runner group, as far as the priority classes' sync cares."""

    id: int
    name: str
    visibility: str = "all"
    restricted_to_workflows: bool = False
    selected_workflows: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    id: int
    status: str  # "queued" | "in_progress" | "completed" | "waiting" | ...
    conclusion: str | None = None
    runner_name: str | None = None
    labels: tuple[str, ...] = ()


class GitHubError(Exception):
    """A GitHub call failed for good: the one error every :class:`GitHubApi` raises.

    The REST client (scaler.github.http) and the simulator (scaler.github.sim)
    both raise it, so callers handle GitHub's answers one way whatever serves
    them. It carries GitHub's status (None: no response), the method and path
    when known, and GitHub's own message: never a header, query or body, which
    may hold credentials.
    """

    def __init__(self, status: int | None, message: str, *, method: str = "", path: str = "") -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        answer = status if status is not None else "no response"
        call = f" {method} {path}".rstrip() if method or path else ""
        super().__init__(f"GitHub{call} failed: {answer}: {message}")


class GitHubApi(Protocol):
    """What the agent asks GitHub; every method raises :class:`GitHubError` when GitHub refuses."""

    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig: ...

    def list_runners(self) -> Sequence[Runner]: ...

    def delete_runner(self, runner_id: int) -> None:
        """Deregister a runner; a runner that is already gone is not an error."""
        ...

    def get_job(self, repo_full_name: str, job_id: int) -> Job: ...


@runtime_checkable
class RunnerGroupApi(Protocol):
    """What the priority classes' sync asks GitHub (scaler.github.runner_groups)."""

    def list_runner_groups(self) -> Sequence[RunnerGroupInfo]: ...

    def repository_ids(self) -> Mapping[str, int]: ...

    def create_runner_group(self, name: str, repository_ids: Sequence[int], workflows: Sequence[str]) -> int: ...

    def update_runner_group(
        self, group_id: int, name: str, repository_ids: Sequence[int], workflows: Sequence[str]
    ) -> None: ...

    def watch_runner_groups(self, ids: Sequence[int]) -> None: ...
