"""The declared metrics collection scrapes the port and path each service really serves.

Ports and paths are read from the services' own code and settings (the
webhook's Flask routes and gunicorn settings, the agent's command line
resolved from the env the stack gives it), and the agent's endpoint is
actually fetched, so a moved route or port fails here, not silently in Cloud
Monitoring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import start_http_server

from scaler.agent.metrics import AgentMetrics
from scaler.cli import agent as agent_command
from scaler.webhook.settings import server_settings_from_env
from tests.harness.github import free_port
from tests.harness.webhooks import make_intake
from tests.infra.conftest import of_type


def run_monitoring(hub: dict[str, Any]) -> dict[str, Any]:
    (version,) = [
        r for r in of_type(hub, "SecretVersion", raw=True) if "garo-webhook-run-monitoring" in r["inputs"]["secret"]
    ]
    document: dict[str, Any] = json.loads(version["inputs"]["secretData"])
    return document


def test_the_webhook_sidecar_scrapes_the_port_and_path_the_webhook_serves(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    hub = captures["hub"]
    (service,) = [r["inputs"] for r in of_type(hub, "cloudrunv2/service:Service")]
    webhook, collector = service["template"]["containers"]
    assert collector["image"].startswith("us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/")
    assert collector["dependsOns"] == [webhook["name"]] and "ports" not in collector
    # The sidecar reads /etc/rungmp/config.yaml, mounted from the secret holding the RunMonitoring document.
    (mount,) = collector["volumeMounts"]
    (volume,) = [v for v in service["template"]["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == "/etc/rungmp" and volume["secret"]["items"][0]["path"] == "config.yaml"
    document = run_monitoring(hub)
    assert document["kind"] == "RunMonitoring"
    (endpoint,) = document["spec"]["endpoints"]
    # Cloud Run sets PORT to the container port; gunicorn binds what the webhook's settings say.
    port = webhook["ports"]["containerPort"]
    bind = server_settings_from_env({"PORT": str(port)}).bind
    assert endpoint["port"] == port == int(bind.rsplit(":", 1)[1])
    intake = make_intake(tmp_path)
    routes = {rule.rule: rule.endpoint for rule in intake.app.url_map.iter_rules()}
    assert routes.get(endpoint["path"]) == "webhook.metrics"
    served = intake.client.get(endpoint["path"])
    assert served.status_code == 200 and b"garo_webhook_publish_seconds" in served.data
    intake.tap.close()


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_the_agent_collector_scrapes_the_port_and_path_the_agent_serves(captures: dict[str, Any], stack: str) -> None:
    (template,) = [
        r["inputs"]
        for r in of_type(captures[stack], "InstanceTemplate")
        if r["inputs"]["labels"]["garo-group"] == "scaler"
    ]
    user_data = template["metadata"]["user-data"]
    assert user_data.startswith("#cloud-config\n")
    cloud_config = json.loads(user_data.split("\n", 1)[1])
    files = {f["path"]: f["content"] for f in cloud_config["write_files"]}
    unit = files["/etc/systemd/system/garo-metrics.service"]
    assert "--network host" in unit and "googlemanagedprometheus" not in unit
    collector = json.loads(files["/etc/garo/otelcol.yaml"])
    assert collector["service"]["pipelines"]["metrics"]["exporters"] == ["googlemanagedprometheus"]
    (scrape,) = collector["receivers"]["prometheus"]["config"]["scrape_configs"]
    (target,) = scrape["static_configs"][0]["targets"]
    host, port = target.split(":")
    # The port the agent binds, as its own command line reads it from the env the stack gives it.
    declaration = json.loads(template["metadata"]["gce-container-declaration"])
    (container,) = declaration["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        context = agent_command.make_context("agent", container["args"][1:])
    assert host == "localhost" and int(port) == context.params["metrics_port"]
    # And the agent's metrics server answers on that path (here on a free port: the path is what matters).
    metrics, local = AgentMetrics(), free_port()
    metrics.reconcile_passes.inc()
    server, thread = start_http_server(local, addr="127.0.0.1", registry=metrics.registry)
    try:
        answer = requests.get(f"http://127.0.0.1:{local}{scrape['metrics_path']}", timeout=10)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert answer.status_code == 200 and "garo_reconcile_passes_total 1.0" in answer.text
