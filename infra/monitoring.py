"""Metrics into Cloud Monitoring (Managed Service for Prometheus), not only on a local port.

Each runtime gets Google's standard collection path for Prometheus metrics:

* the webhook on Cloud Run: the Managed Service for Prometheus sidecar
  (``cloud-run-gmp-sidecar``) next to the webhook container, reading a
  ``RunMonitoring`` document mounted from Secret Manager at
  ``/etc/rungmp/config.yaml`` (the only way the sidecar takes a configuration);
* the agent on its Container-Optimized OS VM (where the Ops Agent does not
  run): the Google-Built OpenTelemetry Collector, started by cloud-init
  (``user-data``) as a container on the host network, scraping the agent's
  port with its Prometheus receiver and exporting with
  ``googlemanagedprometheus``.

Ports and paths come from the services' own code (``scaler.webhook.metrics``,
``scaler.agent.metrics``), and tests/infra/test_monitoring.py checks the
declared configuration against what the services really serve.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.secrets import secret_reader, secret_with_version

WEBHOOK_COLLECTOR_IMAGE = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
)
AGENT_COLLECTOR_IMAGE = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/google-cloud-opentelemetry-collector/otelcol-google:0.121.0"
)
RUN_MONITORING_DIR = "/etc/rungmp"
SCRAPE_INTERVAL = "30s"
COLLECTOR_CONTAINER = "metrics-collector"
AGENT_COLLECTOR_CONFIG = "/etc/garo/otelcol.yaml"


def run_monitoring(name: str, port: int, path: str) -> str:
    """The sidecar's ``RunMonitoring`` document (JSON is YAML): scrape ``port``/``path``, label by revision."""
    document = {
        "apiVersion": "monitoring.googleapis.com/v1beta",
        "kind": "RunMonitoring",
        "metadata": {"name": name},
        "spec": {
            "endpoints": [{"port": port, "path": path, "interval": SCRAPE_INTERVAL}],
            "targetLabels": {"metadata": ["service", "revision"]},
        },
    }
    return json.dumps(document, indent=2, sort_keys=True)


class WebhookMetricsCollector(pulumi.ComponentResource):
    """The RunMonitoring secret, the webhook identity's grants, and the sidecar to add to the service.

    ``container`` and ``volume`` go into the Cloud Run service's template;
    ``grants`` must exist before the service (it reads the secret at start).
    """

    def __init__(
        self,
        name: str,
        *,
        project: str | None,
        labels: dict[str, str],
        member: pulumi.Input[str],
        port: int,
        path: str,
        depends_on_container: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("garo:gcp:WebhookMetricsCollector", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Not secret: Secret Manager is how the sidecar takes a file; the plan shows it in full.
        secret, version = secret_with_version(
            f"{name}-config",
            "garo-webhook-run-monitoring",
            run_monitoring("garo-webhook", port, path),
            project,
            labels,
            self,
        )
        self.grants: list[pulumi.Resource] = [
            secret_reader(f"{name}-config-reader", secret.id, member, self),
            gcp.projects.IAMMember(
                f"{name}-metric-writer",
                project=project or "",
                role="roles/monitoring.metricWriter",
                member=member,
                opts=child,
            ),
        ]
        self.container: gcp.cloudrunv2.ServiceTemplateContainerArgsDict = {
            "name": COLLECTOR_CONTAINER,
            "image": WEBHOOK_COLLECTOR_IMAGE,
            "depends_ons": [depends_on_container],
            "volume_mounts": [{"name": "run-monitoring", "mount_path": RUN_MONITORING_DIR}],
            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
        }
        self.volume: gcp.cloudrunv2.ServiceTemplateVolumeArgsDict = {
            "name": "run-monitoring",
            "secret": {"secret": secret.secret_id, "items": [{"path": "config.yaml", "version": version.version}]},
        }
        self.register_outputs({"config": secret.id})


def agent_collector_config(port: int, path: str) -> dict[str, Any]:
    """OpenTelemetry Collector pipeline: Prometheus receiver on the agent -> Managed Service for Prometheus."""
    return {
        "receivers": {
            "prometheus": {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": "garo-agent",
                            "scrape_interval": SCRAPE_INTERVAL,
                            "metrics_path": path,
                            "static_configs": [{"targets": [f"localhost:{port}"]}],
                        }
                    ]
                }
            }
        },
        "processors": {
            "resourcedetection": {"detectors": ["gcp"]},
            "batch": {"send_batch_size": 200, "timeout": "5s"},
        },
        "exporters": {"googlemanagedprometheus": {}},
        "service": {
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["resourcedetection", "batch"],
                    "exporters": ["googlemanagedprometheus"],
                }
            }
        },
    }


def agent_collector_user_data(port: int, path: str) -> str:
    """cloud-init ``user-data`` for COS: write the collector's config, run it as a systemd unit.

    The agent's container (konlet) and the collector both use the host
    network, so ``localhost:<port>`` is the agent; nothing listens outside the VM
    that a firewall would have to open.
    """
    config = json.dumps(agent_collector_config(port, path), indent=2, sort_keys=True)
    unit = "\n".join(
        [
            "[Unit]",
            "Description=Garo agent metrics to Managed Service for Prometheus",
            "Wants=network-online.target",
            "After=network-online.target docker.service",
            "[Service]",
            "ExecStartPre=-/usr/bin/docker rm -f garo-metrics",
            "ExecStart=/usr/bin/docker run --rm --name garo-metrics --network host "
            f"-v {AGENT_COLLECTOR_CONFIG}:/etc/otelcol-google/config.yaml:ro {AGENT_COLLECTOR_IMAGE} "
            "--config=/etc/otelcol-google/config.yaml",
            "ExecStop=/usr/bin/docker stop garo-metrics",
            "Restart=always",
            "RestartSec=10",
            "[Install]",
            "WantedBy=multi-user.target",
        ]
    )
    document = {
        "write_files": [
            {"path": AGENT_COLLECTOR_CONFIG, "permissions": "0644", "owner": "root", "content": config},
            {
                "path": "/etc/systemd/system/garo-metrics.service",
                "permissions": "0644",
                "owner": "root",
                "content": unit,
            },
        ],
        "runcmd": ["systemctl daemon-reload", "systemctl start garo-metrics.service"],
    }
    # cloud-config is YAML; JSON is YAML, and json.dumps needs no extra dependency.
    return "#cloud-config\n" + json.dumps(document, indent=2)
