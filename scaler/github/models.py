"""What the agent knows about GitHub, independent of how it is fetched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
class Job:
    id: int
    status: str  # "queued" | "in_progress" | "completed" | "waiting" | ...
    conclusion: str | None = None
    runner_name: str | None = None
    labels: tuple[str, ...] = ()


class GitHubApi(Protocol):
    def generate_jit_config(self, name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig: ...

    def list_runners(self) -> Sequence[Runner]: ...

    def delete_runner(self, runner_id: int) -> None:
        """Deregister a runner; a runner that is already gone is not an error."""
        ...

    def get_job(self, repo_full_name: str, job_id: int) -> Job: ...
