"""GitHub's own webhook examples, as templates for the demo's events.

The demo replays real payloads from ``@octokit/webhooks-examples`` (installed
by ``npm ci``), changing only what identifies a job (ids, labels, repository,
runner) and when it happened (:func:`as_if_now`: the webhook refuses events
older than GitHub's redelivery window), so that the webhook sees the exact
shape GitHub sends.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

INDEX = Path("node_modules/@octokit/webhooks-examples/api.github.com/index.json")
JOB_TIMES = ("created_at", "started_at", "completed_at")


def as_if_now(payload: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """``payload`` with its job's timestamps moved (gaps kept) so that the newest is a minute before ``now``."""
    job = payload.get("workflow_job")
    if not isinstance(job, dict):
        return payload
    times = {k: datetime.fromisoformat(job[k]) for k in JOB_TIMES if isinstance(job.get(k), str)}
    if times:
        shift = datetime.fromtimestamp((time.time() if now is None else now) - 60, UTC) - max(times.values())
        for key, value in times.items():
            job[key] = (value + shift).strftime("%Y-%m-%dT%H:%M:%SZ")
    return payload


class ExamplesMissing(RuntimeError):
    pass


def find_index(start: Path | None = None) -> Path:
    """The examples' index.json, looked up from the working directory and from this package."""
    roots = [start or Path.cwd(), Path(__file__).resolve().parents[2]]
    for root in roots:
        for directory in (root, *root.parents):
            candidate = directory / INDEX
            if candidate.is_file():
                return candidate
    raise ExamplesMissing("GitHub's webhook examples are not installed: run `npm ci` in the repository (make does)")


@dataclass(frozen=True)
class Examples:
    """The ``workflow_job`` examples by action, and the ``ping`` example."""

    workflow_job: Mapping[str, tuple[dict[str, Any], ...]]
    ping: dict[str, Any]

    @classmethod
    def load(cls, path: Path | None = None) -> Examples:
        entries = json.loads((path or find_index()).read_text(encoding="utf-8"))
        by_name = {entry["name"]: entry["examples"] for entry in entries}
        jobs: dict[str, list[dict[str, Any]]] = {}
        for example in by_name.get("workflow_job", []):
            jobs.setdefault(example["action"], []).append(as_if_now(example))
        if not by_name.get("ping") or not {"queued", "in_progress", "completed"} <= set(jobs):
            raise ExamplesMissing(f"{path}: no workflow_job/ping examples found")
        return cls({k: tuple(v) for k, v in jobs.items()}, by_name["ping"][0])

    def self_hosted(self, action: str) -> dict[str, Any]:
        """An example for a job on self-hosted runners when GitHub has one, else the first."""
        candidates = self.workflow_job[action]
        for example in candidates:
            if "self-hosted" in example["workflow_job"]["labels"]:
                return example
        return candidates[0]

    def render(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A real example for ``event['action']`` carrying the job fields of ``event``."""
        payload = copy.deepcopy(self.self_hosted(event["action"]))
        payload["workflow_job"].update(event["workflow_job"])
        owner, _, name = event["repository"]["full_name"].partition("/")
        payload["repository"].update({"name": name, "full_name": f"{owner}/{name}"})
        payload["repository"]["owner"]["login"] = owner
        organization = payload.get("organization") or {}
        payload["organization"] = {**organization, "login": owner}
        return payload


def to_bytes(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the way GitHub serialises deliveries."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
