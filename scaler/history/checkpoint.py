"""The export's checkpoint: an append-only log beside the output, so an interrupted export resumes.

Why a log and not a state file rewritten after each run: a month of a busy
organisation is tens of thousands of runs, and rewriting a growing file per
run costs quadratic I/O. Appending one short line per run costs nothing, and a
line torn by a crash only means that run is fetched again (the output side
skips job ids it already holds, so nothing is written twice).

Order of writes, per run: its jobs go to the output and are flushed to disk,
then the run's line is appended here. A crash between the two re-fetches the
run; a crash never marks a run done whose jobs are not on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from scaler.history.record import format_time, parse_time

FORMAT = "garo.history.export.v1"


class CheckpointError(ValueError):
    """The checkpoint does not belong to this export, or cannot be read."""


@dataclass
class CheckpointState:
    org: str
    since: datetime
    repos_option: list[str] | None  # what --repos said (None: every repository of the org)
    repos: list[str] | None = None  # the list resolved when the export started
    done_repos: set[str] = field(default_factory=set)
    done_runs: set[int] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    finished: bool = False


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


class Checkpoint:
    """Appends progress lines; `load` replays them."""

    def __init__(self, path: Path, stream: TextIO) -> None:
        self.path = path
        self._stream = stream

    @classmethod
    def start(cls, path: Path, org: str, since: datetime, repos_option: list[str] | None) -> Checkpoint:
        checkpoint = cls(path, path.open("x", encoding="utf-8"))
        checkpoint._append(
            {"checkpoint": FORMAT, "org": org, "since": format_time(since), "repos_option": repos_option}
        )
        return checkpoint

    @classmethod
    def reopen(cls, path: Path) -> Checkpoint:
        return cls(path, path.open("a", encoding="utf-8"))

    @staticmethod
    def load(path: Path) -> CheckpointState:
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read the checkpoint ({exc})") from None
        if not lines:
            raise CheckpointError(f"{path}: empty checkpoint; delete it to start over")
        try:
            header = json.loads(lines[0])
            if header.get("checkpoint") != FORMAT:
                raise ValueError("not an export checkpoint")
            state = CheckpointState(
                org=str(header["org"]), since=parse_time(str(header["since"])), repos_option=header["repos_option"]
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: line 1 is not a {FORMAT} header ({exc}); delete it to start over") from None
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
            except ValueError:
                if number == len(lines) and not line.endswith("\n"):
                    break  # torn by the interruption: that run is simply fetched again
                raise CheckpointError(f"{path}: line {number} is not JSON; delete the file to start over") from None
            _apply(state, entry)
        return state

    def _append(self, entry: dict[str, Any]) -> None:
        self._stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def repos(self, repos: list[str]) -> None:
        self._append({"repos": repos})

    def run_done(self, repo: str, run_id: int) -> None:
        self._append({"run": run_id, "repo": repo})

    def repo_done(self, repo: str) -> None:
        self._append({"repo_done": repo})

    def rejected(self, reason: str) -> None:
        self._append({"rejected": reason})

    def finished(self, jobs: int) -> None:
        self._append({"finished": True, "jobs": jobs})

    def close(self) -> None:
        self._stream.close()


def _apply(state: CheckpointState, entry: dict[str, Any]) -> None:
    if "repos" in entry:
        state.repos = [str(r) for r in entry["repos"]]
    elif "run" in entry:
        state.done_runs.add(int(entry["run"]))
    elif "repo_done" in entry:
        state.done_repos.add(str(entry["repo_done"]))
    elif "rejected" in entry:
        state.rejected.append(str(entry["rejected"]))
    elif entry.get("finished"):
        state.finished = True
