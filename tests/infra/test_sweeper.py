"""The scheduled redelivery sweeper in the hub stack: when it runs, what it runs, and what it may touch."""

from __future__ import annotations

from typing import Any

from infra.sweeper import JOB_NAME, TASK_TIMEOUT, run_uri
from scaler.github.deliveries import REDELIVERY_WINDOW, parse_duration
from tests.infra.conftest import of_type

SWEEPER = "serviceAccount:garo-redeliver@"
TRIGGER = "serviceAccount:garo-redeliver-trigger@"


def bindings_of(capture: dict[str, Any], member_prefix: str) -> list[dict[str, Any]]:
    """Every IAM grant of any kind (project, secret, job, topic...) whose member is that account."""
    grants = [r for r in capture["resources"] if r["custom"] and r["type"].split(":")[-1].upper().endswith("MEMBER")]
    return [g for g in grants if str(g["inputs"].get("member", "")).startswith(member_prefix)]


def test_runs_every_five_minutes_over_githubs_redelivery_window(captures: dict[str, Any]) -> None:
    hub = captures["hub"]
    (schedule,) = [r["inputs"] for r in of_type(hub, "cloudscheduler/job:Job")]
    (job,) = [r["inputs"] for r in of_type(hub, "cloudrunv2/job:Job")]
    assert schedule["schedule"] == "*/5 * * * *" and schedule["retryConfig"]["retryCount"] == 0
    assert schedule["httpTarget"]["uri"] == run_uri("acme-ci-hub", "europe-west1")
    assert schedule["httpTarget"]["uri"].endswith(f"/jobs/{JOB_NAME}:run")
    assert schedule["httpTarget"]["oauthToken"]["serviceAccountEmail"].startswith("garo-redeliver-trigger@")
    task = job["template"]["template"]
    assert task["containers"][0]["args"] == ["redeliver", "--since", REDELIVERY_WINDOW]
    # GitHub.com redelivers deliveries of the past 3 days (docs.github.com, "Redelivering webhooks").
    assert parse_duration(REDELIVERY_WINDOW).days == 3
    # Scheduled runs never overlap: one task, no retries, and a run ends before the next starts.
    assert (job["template"]["taskCount"], job["template"]["parallelism"], task["maxRetries"]) == (1, 1, 0)
    assert int(TASK_TIMEOUT.rstrip("s")) < 5 * 60 and task["timeout"] == TASK_TIMEOUT


def test_the_sweeper_can_read_the_app_key_and_nothing_else(captures: dict[str, Any]) -> None:
    hub = captures["hub"]
    (job,) = [r["inputs"] for r in of_type(hub, "cloudrunv2/job:Job")]
    assert job["template"]["template"]["serviceAccount"].startswith("garo-redeliver@")
    grants = bindings_of(hub, SWEEPER)
    assert [(g["type"], g["inputs"]["role"], g["inputs"]["secretId"]) for g in grants] == [
        (
            "gcp:secretmanager/secretIamMember:SecretIamMember",
            "roles/secretmanager.secretAccessor",
            "projects/acme-ci-hub/secrets/garo-webhook-app-key",
        )
    ]
    secret_refs = [e for e in job["template"]["template"]["containers"][0]["envs"] if "valueSource" in e]
    assert [e["valueSource"]["secretKeyRef"]["secret"] for e in secret_refs] == [grants[0]["inputs"]["secretId"]]


def test_the_trigger_can_start_this_job_and_nothing_else(captures: dict[str, Any]) -> None:
    grants = bindings_of(captures["hub"], TRIGGER)
    assert [(g["type"], g["inputs"]["role"], g["inputs"]["name"]) for g in grants] == [
        ("gcp:cloudrunv2/jobIamMember:JobIamMember", "roles/run.invoker", JOB_NAME)
    ]


def test_its_outcome_is_a_log_metric_with_an_alert(captures: dict[str, Any]) -> None:
    hub = captures["hub"]
    (metric,) = [r["inputs"] for r in of_type(hub, "logging/metric:Metric")]
    assert f'resource.labels.job_name="{JOB_NAME}"' in metric["filter"]
    assert metric["labelExtractors"] == {"outcome": "EXTRACT(jsonPayload.outcome)"}
    (policy,) = [r["inputs"] for r in of_type(hub, "monitoring/alertPolicy:AlertPolicy")]
    filters = [c.get("conditionThreshold", c.get("conditionAbsent"))["filter"] for c in policy["conditions"]]
    assert all(f"logging.googleapis.com/user/{metric['name']}" in f for f in filters)
    assert any('outcome!="ok"' in f for f in filters) and any("conditionAbsent" in c for c in policy["conditions"])


def test_departments_have_no_sweeper(captures: dict[str, Any]) -> None:
    for stack in ("payments", "research"):
        assert not of_type(captures[stack], "cloudrunv2/job:Job")
        assert not bindings_of(captures[stack], SWEEPER)
