"""GitHub's own webhook examples, as templates for the demo's events.

The demo replays real payloads from ``@octokit/webhooks-examples`` (installed
by ``npm ci``), changing only what identifies a job (ids, labels, repository,
runner), so that the webhook sees the exact shape GitHub sends.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX = Path("node_modules/@octokit/webhooks-examples/api.github.com/index.json")


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
            jobs.setdefault(example["action"], []).append(example)
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
