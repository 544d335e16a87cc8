"""The hub stack: one per organisation, between GitHub and the departments.

GitHub posts ``workflow_job`` events to a public Cloud Run service (the
webhook); it verifies the signature, routes the job and publishes it to one
topic with a ``department`` attribute. The webhook's service account may only
publish to that topic and read its two secrets (the webhook secret and the
routing table, mounted as a file); it holds no GitHub App key. The webhook
App's key (for redelivery) is stored here but granted to no one by this
component. The hub has no dead-letter topic: each department dead-letters into
its own (infra/subscription.py), so no department reads another's.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.monitoring import WebhookMetricsCollector
from infra.secrets import (
    secret_manager_secret,
    secret_reader,
    secret_with_version,
    webhook_app_key_secret,
)
from infra.stack import LoadedStack, portal_document
from infra.subscription import DEFAULT_TOPIC
from infra.sweeper import Sweeper, SweeperArgs
from scaler.config import ConfigError
from scaler.config.routing import parse_routing_table
from scaler.webhook.metrics import METRICS_PATH
from scaler.webhook.settings import ServerSettings

ROUTES_DIR = "/etc/garo"
#: The port gunicorn binds by default ($PORT on Cloud Run): the service's ingress and its metrics.
WEBHOOK_PORT = int(ServerSettings().bind.rsplit(":", 1)[1])
WEBHOOK_CONTAINER = "webhook"


def routes_document(static: list[Any], from_stacks: list[Any]) -> str:
    """The webhook's routing table: static routes first, then departments' `route` outputs.

    Checked with the webhook's own parser here, so two departments claiming the
    same labels fail `pulumi up -s hub` with key paths, not the webhook at start.
    """
    departments = sorted([*static, *from_stacks], key=lambda d: str(d.get("name", "")))
    document = {"version": 1, "departments": departments}
    try:
        parse_routing_table(document, "routing table assembled by the hub")
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    return json.dumps(document, sort_keys=True, indent=2)


class Hub(pulumi.ComponentResource):
    """Topic, webhook secret, webhook App key, routing table, Cloud Run webhook.

    ``outputs`` is the one place for what it produces: registered as the
    component's outputs and exported as the stack's (the portal document, the
    webhook URL GitHub posts to, the topics and the assembled routing table).
    """

    outputs: dict[str, Any]

    def __init__(self, name: str, loaded: LoadedStack, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:Hub", name, None, opts)
        config = loaded.config
        assert config.hub is not None, "hub stacks always have hub settings (schema)"
        project, region = config.project, config.region
        labels = dict(config.resource_labels)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = gcp.pubsub.Topic(
            f"{name}-topic",
            name=DEFAULT_TOPIC,
            project=project,
            labels=labels,
            message_retention_duration="86400s",
            opts=child,
        )
        sa = gcp.serviceaccount.Account(
            f"{name}-webhook-sa", account_id="garo-webhook", display_name="Garo webhook", project=project, opts=child
        )
        gcp.pubsub.TopicIAMMember(
            f"{name}-webhook-publisher",
            project=project,
            topic=self.topic.name,
            role="roles/pubsub.publisher",
            member=sa.member,
            opts=child,
        )
        webhook_secret = secret_manager_secret(
            f"{name}-webhook-secret",
            "garo-webhook-secret",
            config.github.webhook_secret,
            loaded.secret("garo:github.webhookSecret"),
            project,
            labels,
            self,
        )
        if webhook_secret is None:
            raise pulumi.RunError("garo:github.webhookSecret is required for the hub stack")
        # For the redelivery sweeper only: the webhook service signs nothing, so it is granted nothing here.
        self.webhook_app_key_secret = webhook_app_key_secret(f"{name}-webhook-app-key", loaded, self)
        references = [pulumi.StackReference(ref, opts=child) for ref in config.hub.department_stacks]
        # A department's route is taken together with its subscription: the department stack creates the
        # subscription before it exports anything, and a route without one (a failed first `pulumi up`)
        # fails the hub's update instead of publishing events that no subscription keeps.
        department_routes = [
            pulumi.Output.all(ref.require_output("route"), ref.require_output("subscription")).apply(lambda v: v[0])
            for ref in references
        ]
        routes = pulumi.Output.all(*department_routes).apply(
            lambda found: routes_document([dict(r) for r in config.hub.routes] if config.hub else [], list(found))
        )
        # Not secret, but Secret Manager is how Cloud Run mounts a file; the plan shows it in full.
        routes_secret, routes_version = secret_with_version(
            f"{name}-routes", "garo-routes", routes, project, labels, self
        )
        grants = [
            secret_reader(f"{name}-webhook-{short}", secret, sa.member, self)
            for short, secret in (("secret", webhook_secret), ("routes", routes_secret.id))
        ]
        collector = WebhookMetricsCollector(
            f"{name}-webhook-metrics",
            project=project,
            labels=labels,
            member=sa.member,
            port=WEBHOOK_PORT,
            path=METRICS_PATH,
            depends_on_container=WEBHOOK_CONTAINER,
            opts=child,
        )
        self.service = gcp.cloudrunv2.Service(
            f"{name}-webhook",
            name="garo-webhook",
            project=project,
            location=region,
            # GitHub calls from the internet; every request is authenticated by its HMAC signature.
            ingress="INGRESS_TRAFFIC_ALL",
            labels=labels,
            deletion_protection=False,
            template={
                "service_account": sa.email,
                "labels": labels,
                "scaling": {"min_instance_count": 1, "max_instance_count": 10},
                "containers": [
                    {
                        "name": WEBHOOK_CONTAINER,
                        "image": config.hub.webhook_image,
                        "ports": {"container_port": WEBHOOK_PORT},
                        # CPU between requests too, so the metrics sidecar's scrapes are not throttled.
                        "resources": {"cpu_idle": False},
                        "args": ["webhook"],
                        "envs": [
                            {"name": "GARO_BUS", "value": self.topic.name.apply(lambda t: f"pubsub://{project}/{t}")},
                            {"name": "GARO_ROUTES", "value": f"{ROUTES_DIR}/routes.json"},
                            {
                                "name": "GARO_WEBHOOK_SECRET",
                                "value_source": {"secret_key_ref": {"secret": webhook_secret, "version": "latest"}},
                            },
                        ],
                        "volume_mounts": [{"name": "routes", "mount_path": ROUTES_DIR}],
                    },
                    collector.container,
                ],
                "volumes": [
                    {
                        "name": "routes",
                        "secret": {
                            "secret": routes_secret.secret_id,
                            "items": [{"path": "routes.json", "version": routes_version.version}],
                        },
                    },
                    collector.volume,
                ],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*grants, *collector.grants]),
        )
        gcp.cloudrunv2.ServiceIamMember(
            f"{name}-webhook-public",
            project=project,
            location=region,
            name=self.service.name,
            role="roles/run.invoker",
            member="allUsers",
            opts=child,
        )
        self.webhook_secret = webhook_secret
        self.routes = routes
        # What GitHub posts to: the service's path, not its bare URI.
        webhook_url = self.service.uri.apply(lambda uri: f"{uri}/webhook")
        self.sweeper = self._sweeper(name, loaded)
        self.outputs = {
            "portal": pulumi.Output.from_input(
                portal_document(
                    "hub",
                    config,
                    loaded.stack,
                    webhookUrl=webhook_url,
                    topic=self.topic.id,
                    departmentStacks=list(config.hub.department_stacks),
                )
            ),
            "webhookUrl": webhook_url,
            "topic": self.topic.id,
            # The routing table the webhook mounts, readable in `garo plan` and by on-call.
            "routes": routes.apply(json.loads),
        }
        if self.webhook_app_key_secret is not None:
            # Secret Manager name of the webhook App's key (no value): what the redelivery sweeper is granted.
            self.outputs["webhookAppKeySecret"] = self.webhook_app_key_secret
        if self.sweeper is not None:
            self.outputs["redeliverySweeper"] = self.sweeper.outputs
        self.register_outputs(self.outputs)

    def _sweeper(self, name: str, loaded: LoadedStack) -> Sweeper | None:
        """The scheduled `garo redeliver`, when the hub stack names its webhook App (its key is the one secret)."""
        config = loaded.config
        assert config.hub is not None
        app = config.github.webhook_app
        if app is None or self.webhook_app_key_secret is None:
            return None
        args = SweeperArgs(
            project=config.project,
            region=config.region,
            image=config.hub.webhook_image,
            app_id=app.app_id,
            key_secret=self.webhook_app_key_secret,
            webhook_url=self.service.uri,
            api_url=config.github.api_url,
            labels=dict(config.resource_labels),
        )
        return Sweeper(f"{name}-redeliver", args, opts=pulumi.ResourceOptions(parent=self))
