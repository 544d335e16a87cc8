"""The redelivery sweeper, scheduled: ``garo redeliver`` every 5 minutes as a Cloud Run job.

GitHub never retries a failed webhook delivery, so a ``queued`` event the
webhook answered with 503 is a job without a runner until someone asks GitHub
to redeliver it. Cloud Scheduler starts the job every 5 minutes; each run looks
back over GitHub's whole redelivery window (3 days) and redelivers each GUID
that never got through, at most once, deciding from GitHub's own delivery log
(scaler/github/deliveries.py), so runs whose windows overlap never redeliver a
GUID twice. Scheduled runs never overlap in time either: one task, no retries,
and a task timeout shorter than the interval.

Two identities, each with one grant:

* the job runs as the sweeper's service account, which may read only the hub
  App's key secret (the App id is not a secret; logs go to stdout, which Cloud
  Run collects without a role);
* Cloud Scheduler calls the Cloud Run Admin API as a trigger account that may
  run only this job.

Each run ends with one JSON log line (``redeliver: sweep finished``) whose
``outcome`` a log-based metric counts; an alert policy fires when runs fail or
stop arriving (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.secrets import secret_reader
from scaler.github.deliveries import REDELIVERY_WINDOW, SUMMARY

JOB_NAME = "garo-redeliver"
SCHEDULE = "*/5 * * * *"
#: Shorter than the schedule's interval, so a slow run ends before the next one starts.
TASK_TIMEOUT = "240s"
LOG_METRIC = "garo/redeliver_runs"


@dataclass(frozen=True)
class SweeperArgs:
    """What the hub hands its sweeper."""

    project: str | None
    region: str
    #: The garo image (entrypoint ``garo``); the webhook's image serves.
    image: str
    #: The hub GitHub App whose delivery log is swept (numeric id, not a secret).
    app_id: int
    #: Secret Manager secret (``projects/<p>/secrets/<id>``) holding that App's private key (PEM).
    key_secret: pulumi.Input[str]
    #: The webhook's base URL: a sweep first asks its ``/readyz``.
    webhook_url: pulumi.Input[str]
    api_url: str = "https://api.github.com"
    labels: Mapping[str, str] = field(default_factory=dict)
    schedule: str = SCHEDULE


def run_uri(project: str | None, region: str) -> str:
    """The Cloud Run Admin API call Cloud Scheduler makes: ``jobs.run`` on this job."""
    return f"https://run.googleapis.com/v2/projects/{project}/locations/{region}/jobs/{JOB_NAME}:run"


def summary_filter() -> str:
    """Cloud Logging filter for the one summary line each run writes."""
    return (
        f'resource.type="cloud_run_job" AND resource.labels.job_name="{JOB_NAME}" AND jsonPayload.message="{SUMMARY}"'
    )


class Sweeper(pulumi.ComponentResource):
    """Service accounts, the Cloud Run job, its schedule, and the metric and alert on its outcome.

    ``outputs`` is what it registers: the job's name, its schedule and the
    sweeper's service account email.
    """

    outputs: dict[str, Any]

    def __init__(self, name: str, args: SweeperArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:Sweeper", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        project, region, labels = args.project, args.region, dict(args.labels)
        sa = gcp.serviceaccount.Account(
            f"{name}-sa",
            account_id="garo-redeliver",
            display_name="Garo redelivery sweeper",
            project=project,
            opts=child,
        )
        key_grant = secret_reader(f"{name}-app-key", args.key_secret, sa.member, self)
        self.job = gcp.cloudrunv2.Job(
            f"{name}-job",
            name=JOB_NAME,
            project=project,
            location=region,
            labels=labels,
            deletion_protection=False,
            template={
                "labels": labels,
                "task_count": 1,
                "parallelism": 1,
                "template": {
                    "service_account": sa.email,
                    "max_retries": 0,  # the next scheduled run is the retry
                    "timeout": TASK_TIMEOUT,
                    "containers": [
                        {
                            "image": args.image,
                            "args": ["redeliver", "--since", REDELIVERY_WINDOW],
                            "envs": [
                                {"name": "GARO_GITHUB_APP_ID", "value": str(args.app_id)},
                                {"name": "GARO_GITHUB_API_URL", "value": args.api_url},
                                {"name": "GARO_WEBHOOK_URL", "value": args.webhook_url},
                                {
                                    "name": "GARO_GITHUB_PRIVATE_KEY",
                                    "value_source": {
                                        "secret_key_ref": {"secret": args.key_secret, "version": "latest"}
                                    },
                                },
                            ],
                            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                        }
                    ],
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[key_grant]),
        )
        trigger = gcp.serviceaccount.Account(
            f"{name}-trigger-sa",
            account_id="garo-redeliver-trigger",
            display_name="Starts the Garo redelivery sweeper",
            project=project,
            opts=child,
        )
        invoker = gcp.cloudrunv2.JobIamMember(
            f"{name}-trigger-invoker",
            project=project,
            location=region,
            name=self.job.name,
            role="roles/run.invoker",
            member=trigger.member,
            opts=child,
        )
        self.schedule = gcp.cloudscheduler.Job(
            f"{name}-schedule",
            name=JOB_NAME,
            project=project,
            region=region,
            schedule=args.schedule,
            time_zone="Etc/UTC",
            attempt_deadline="60s",
            retry_config={"retry_count": 0},
            http_target={
                "http_method": "POST",
                "uri": run_uri(project, region),
                "oauth_token": {
                    "service_account_email": trigger.email,
                    "scope": "https://www.googleapis.com/auth/cloud-platform",
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[invoker, self.job]),
        )
        runs = gcp.logging.Metric(
            f"{name}-runs",
            name=LOG_METRIC,
            project=project,
            description="garo redeliver runs by outcome (ok, failed, webhook_not_ready, error)",
            filter=summary_filter(),
            metric_descriptor={
                "metric_kind": "DELTA",
                "value_type": "INT64",
                "unit": "1",
                "labels": [{"key": "outcome", "value_type": "STRING", "description": "the run's outcome"}],
            },
            label_extractors={"outcome": "EXTRACT(jsonPayload.outcome)"},
            opts=child,
        )
        metric = runs.name.apply(lambda n: f'metric.type="logging.googleapis.com/user/{n}"')
        gcp.monitoring.AlertPolicy(
            f"{name}-alert",
            project=project,
            display_name="Garo redelivery sweeper failing or not running",
            combiner="OR",
            user_labels=labels,
            documentation={
                "content": "See docs/operations.md, 'GaroRedeliverySweeperFailing'.",
                "mime_type": "text/markdown",
            },
            conditions=[
                {
                    "display_name": "runs end in something other than ok",
                    "condition_threshold": {
                        "filter": metric.apply(
                            lambda m: f'{m} AND resource.type="cloud_run_job" AND metric.label.outcome!="ok"'
                        ),
                        "comparison": "COMPARISON_GT",
                        "threshold_value": 0,
                        "duration": "900s",  # three runs in a row
                        "aggregations": [{"alignment_period": "300s", "per_series_aligner": "ALIGN_SUM"}],
                    },
                },
                {
                    "display_name": "no run for 15 minutes",
                    "condition_absent": {
                        "filter": metric.apply(lambda m: f'{m} AND resource.type="cloud_run_job"'),
                        "duration": "900s",
                        "aggregations": [{"alignment_period": "300s", "per_series_aligner": "ALIGN_SUM"}],
                    },
                },
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[runs]),
        )
        self.outputs = {"job": self.job.name, "schedule": args.schedule, "serviceAccount": sa.email}
        self.register_outputs(self.outputs)
