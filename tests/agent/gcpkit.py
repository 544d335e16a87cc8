"""Shared pieces for the agent's tests against the real stand-ins (Compute fake, Prism, scripted GitHub).

* :func:`gcp_config` is a department stack on GCP, parsed by the one schema;
* :func:`backend` is the real :class:`GcpBackend` pointed at the Compute fake;
* :class:`Statuses` records every HTTP status a client received (a response
  hook on its ``requests.Session``), so a test can assert that no request was
  rejected by Prism or by the fake's discovery-document validation;
* :func:`event` builds ``workflow_job`` payloads from @octokit's real examples,
  checked against @octokit's schemas, and :func:`publish` puts them on a bus
  with the attributes the webhook sets.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import requests

from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.bus.base import Publisher
from scaler.config import StackConfig, parse_stack_config
from tests.harness.compute import ComputeFake
from tests.harness.webhooks import conforming, load_examples

DEPARTMENT = "eng"
GROUP = "linux"
MIG = f"garo-{DEPARTMENT}-{GROUP}"
REPO = "octo-org/app"
LABELS = ["self-hosted", "linux", "x64", "eng-linux"]


def gcp_config(*, max_vms: int = 10, time_to_start: int = 600, interval: int = 60) -> StackConfig:
    return parse_stack_config(
        {
            "gcp:project": "garo-test",
            "garo:kind": "department",
            "garo:cloud": "gcp",
            "garo:region": "europe-west4",
            "garo:department": DEPARTMENT,
            "garo:github": {"org": "octo-org"},
            "garo:network": {"cidr": "10.20.0.0/20"},
            "garo:reconcileInterval": interval,
            "garo:groups": [
                {
                    "name": GROUP,
                    "labels": LABELS,
                    "runnerGroupId": 1,
                    "max": max_vms,
                    "timeToStart": time_to_start,
                    "timeToLive": 3600,
                }
            ],
        }
    )


class Statuses:
    """Every HTTP status a session received, by (method, path without query)."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[int, str]] = Counter()
        self.rejected: list[tuple[int, str, str]] = []  # 4xx: (status, "METHOD path", body excerpt)

    def attach(self, session: requests.Session) -> requests.Session:
        session.hooks["response"].append(self._record)
        return session

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = requests.utils.urlparse(response.url).path
        self.seen[(response.status_code, path)] += 1
        if 400 <= response.status_code < 500:
            where = f"{response.request.method} {path}"
            self.rejected.append((response.status_code, where, response.text[:300]))


def backend(fake: ComputeFake, session: requests.Session | None = None, **kwargs: Any) -> GcpBackend:
    """The real GCP backend on the fake; no list cache and no real sleeping unless asked."""
    options: dict[str, Any] = {"list_ttl": 0, "sleep": lambda _: None, "backoff": 0.01}
    options.update(kwargs)
    return GcpBackend(
        fake.project,
        fake.region,
        {GROUP: GcpGroup(MIG)},
        session=session or requests.Session(),
        base_url=fake.base_url,
        **options,
    )


def _example(action: str) -> dict[str, Any]:
    for example in load_examples():
        if example.event == "workflow_job" and example.action == action:
            payload = example.payload
            if action != "queued" or "self-hosted" in payload["workflow_job"]["labels"]:
                return payload
    raise AssertionError(f"no workflow_job {action} example")


def event(action: str, job_id: int, *, runner: str | None = None, runner_id: int | None = None) -> bytes:
    """A real octokit example for ``action``, made about our job (and runner), schema-checked."""
    base = _example(action)
    payload = copy.deepcopy(base)
    job = payload["workflow_job"]
    job.update(id=job_id, labels=list(LABELS))
    if action in ("in_progress", "completed"):
        job.update(runner_name=runner, runner_id=runner_id or 1, runner_group_id=1, runner_group_name="Default")
    payload["repository"]["full_name"] = REPO
    payload["repository"]["name"] = REPO.split("/")[1]
    # The examples come from different orgs (the completed one from Octocoders): the job's org is REPO's.
    payload["repository"]["owner"]["login"] = REPO.split("/")[0]
    if "organization" in payload:
        payload["organization"]["login"] = REPO.split("/")[0]
    return conforming("workflow_job", payload, base)


def publish(bus: Publisher, action: str, job_id: int, **kwargs: Any) -> None:
    attrs = {
        "department": DEPARTMENT,
        "group": GROUP,
        "action": action,
        "job_id": str(job_id),
        "delivery": f"{job_id}-{action}",
    }
    bus.publish(event(action, job_id, **kwargs), attrs)


def jit_reply(name: str = "runner", runner_id: int = 1) -> dict[str, Any]:
    """GitHub's generate-jitconfig 201 body (the fields the client reads, shaped like the spec)."""
    return {
        "runner": {
            "id": runner_id,
            "name": name,
            "os": "linux",
            "status": "offline",
            "busy": False,
            "labels": [{"id": 1, "name": label, "type": "custom"} for label in LABELS],
        },
        "encoded_jit_config": "ZW5jb2RlZC1qaXQtY29uZmln",
    }


def job_reply(job_id: int, status: str) -> dict[str, Any]:
    return {"id": job_id, "status": status, "conclusion": None, "runner_name": None, "labels": list(LABELS)}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
