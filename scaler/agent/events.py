"""Turn bus messages into events the agent understands.

Attributes (department, group, action, job_id, delivery) route a message; the
body is GitHub's ``workflow_job`` webhook payload, from which only a few
fields are read. A message that cannot be parsed can never succeed: the
loop hands it back at once so the bus moves it to its dead letters after its
last delivery attempt (counted and logged), and the rest of the batch goes on.
Job ids are bounded here as at the webhook (:func:`scaler.naming.valid_job_id`):
a forged id that no VM name can hold must not reach the planner.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from scaler.bus.base import Message
from scaler.naming import valid_job_id

ACTIONS = ("queued", "waiting", "in_progress", "completed")


class BadMessage(ValueError):
    """The message is not a workflow_job event we can act on."""


@dataclass(frozen=True)
class JobEvent:
    ack_id: str
    delivery: str
    department: str
    group: str
    action: str
    job_id: int
    repo: str
    runner_name: str | None
    runner_id: int | None
    labels: tuple[str, ...]
    created_at: float | None
    started_at: float | None
    delivery_attempt: int = 1
    workflow: str = ""  # workflow_job.workflow_name: with the repository, what decides a job's priority class

    def log_fields(self) -> dict[str, Any]:
        return {"delivery": self.delivery, "job_id": self.job_id, "group": self.group, "action": self.action}


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse(message: Message) -> JobEvent:
    """Read one message; raise BadMessage with a reason that is safe to log."""
    attrs = message.attributes
    action = attrs.get("action", "")
    try:
        body = json.loads(message.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(body, dict):
        raise BadMessage("body is not a JSON object")
    job = body.get("workflow_job")
    if not isinstance(job, dict):
        raise BadMessage("body has no workflow_job object")
    action = action or str(body.get("action", ""))
    if action not in ACTIONS:
        raise BadMessage(f"unknown action {action[:40]!r}")
    raw_id = attrs.get("job_id") or job.get("id")
    if not valid_job_id(raw_id):
        raise BadMessage("job_id is not an integer in 1..2**63-1")
    job_id = int(str(raw_id))
    body_id = job.get("id")
    if body_id is not None and (not valid_job_id(body_id) or int(str(body_id)) != job_id):
        raise BadMessage("job_id attribute and body disagree")
    repo = body.get("repository", {}).get("full_name", "") if isinstance(body.get("repository"), dict) else ""
    runner_id = job.get("runner_id")
    labels = job.get("labels") or []
    return JobEvent(
        ack_id=message.ack_id,
        delivery=attrs.get("delivery", message.message_id),
        department=attrs.get("department", ""),
        group=attrs.get("group", ""),
        action=action,
        job_id=job_id,
        repo=str(repo),
        runner_name=job.get("runner_name") or None,
        runner_id=runner_id if isinstance(runner_id, int) and not isinstance(runner_id, bool) else None,
        labels=tuple(str(label) for label in labels if isinstance(label, str)),
        created_at=_timestamp(job.get("created_at")),
        started_at=_timestamp(job.get("started_at")),
        delivery_attempt=message.delivery_attempt,
        workflow=_workflow(job.get("workflow_name")),
    )


def _workflow(value: Any) -> str:
    """The workflow's name, bounded: it only selects a priority class, so a forged one can at most rank a job."""
    return value[:200] if isinstance(value, str) else ""
