"""Prometheus metrics of the intake.

gunicorn runs several worker processes; a scrape reaches one of them. With
``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn.conf.py does it) every worker writes
its samples to that directory and ``/metrics`` aggregates all workers. Without
it (tests, the Flask dev server) each app has its own registry, so tests can
read the counters of the app they drive.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Where the app serves the metrics (app.py's route), on the port gunicorn binds; collectors scrape it.
METRICS_PATH = "/metrics"


class WebhookMetrics:
    def __init__(self) -> None:
        # Shared storage only if prometheus_client was imported with the directory set.
        self.directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        if values.ValueClass is values.MutexValue:
            self.directory = ""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "garo_webhook_requests",
            "Webhook requests by outcome (published, duplicate, ignored, unmatched, bad_signature, ...)",
            ["outcome"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "garo_webhook_publish_seconds",
            "Time until the bus accepted a message",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.unmatched_jobs = Counter(
            "garo_webhook_unmatched_jobs",
            "workflow_job events asking for self-hosted labels that no runner group has",
            ["action"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        if self.directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.directory)
            return generate_latest(registry)
        return generate_latest(self.registry)
