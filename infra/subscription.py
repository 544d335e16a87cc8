"""A department's subscription on the hub's topic, and the department's own dead letters.

The webhook publishes every routed job once, with a ``department`` attribute;
each department's subscription filters on it, so a department never sees (or
can ack) another's jobs. Messages the scaler fails to handle ten times go to
the department's own dead-letter topic, in its own project, kept by its own
subscription for the department's on-call. Nothing here is granted on the
hub: dead letters of one department are readable in that department's project
only, and a department deployer needs no role on a shared topic (docs/security.md).
Forwarding needs two grants to this project's Pub/Sub service agent, both on
the department's own resources: publisher on its dead-letter topic, and
subscriber on its subscription (to ack what it forwarded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from scaler.config import StackConfig

DEFAULT_TOPIC = "garo-workflow-jobs"
MAX_DELIVERY_ATTEMPTS = 10


def job_filter(department: str) -> str:
    return f'attributes.department = "{department}"'


def dead_letter_name(department: str) -> str:
    """The department's dead-letter topic and subscription: in its own project, named after it."""
    return f"garo-{department}-jobs-dlq"


def hub_topic(config: StackConfig) -> pulumi.Output[str]:
    """The hub's job topic, from garo:hubTopic, the hub stack's outputs, or the default name."""
    if config.hub_stack:
        hub = pulumi.StackReference(config.hub_stack)
        return pulumi.Output.from_input(hub.require_output("topic")).apply(str)
    return pulumi.Output.from_input(config.hub_topic or f"projects/{config.project}/topics/{DEFAULT_TOPIC}")


@dataclass(frozen=True)
class JobSubscriptionArgs:
    """What the department hands its subscription."""

    config: StackConfig


class JobSubscription(pulumi.ComponentResource):
    """The filtered subscription, its own dead-letter topic and subscription, and the service agent's grants."""

    subscription: gcp.pubsub.Subscription
    topic: pulumi.Output[str]
    dead_letter_topic: pulumi.Output[str]
    department: str
    #: Registered outputs: the subscription's id and the dead-letter topic and subscription.
    outputs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: JobSubscriptionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:JobSubscription", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config
        dept, project = config.department, config.project
        labels = dict(config.resource_labels)
        self.department = dept
        self.topic = hub_topic(config)
        dlq = gcp.pubsub.Topic(f"{name}-dlq", name=dead_letter_name(dept), project=project, labels=labels, opts=child)
        self.dead_letter_topic = dlq.id
        dlq_subscription = gcp.pubsub.Subscription(
            f"{name}-dlq-subscription",
            name=dead_letter_name(dept),
            project=project,
            topic=dlq.id,
            labels=labels,
            # A week for on-call to look; nothing consumes it automatically.
            message_retention_duration="604800s",
            expiration_policy={"ttl": ""},
            opts=child,
        )
        self.subscription = gcp.pubsub.Subscription(
            f"{name}-subscription",
            name=f"garo-{dept}-jobs",
            project=project,
            topic=self.topic,
            filter=job_filter(dept),
            labels=labels,
            # Long enough for a JIT config round trip; the agent extends it while it works.
            ack_deadline_seconds=60,
            # A job queued for more than a day has been cancelled by GitHub.
            message_retention_duration="86400s",
            expiration_policy={"ttl": ""},
            retry_policy={"minimum_backoff": "10s", "maximum_backoff": "600s"},
            dead_letter_policy={"dead_letter_topic": dlq.id, "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS},
            opts=child,
        )
        number = gcp.organizations.get_project_output(project_id=project).number
        agent = number.apply(lambda n: f"serviceAccount:service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com")
        gcp.pubsub.TopicIAMMember(
            f"{name}-dlq-publisher",
            project=project,
            topic=dlq.name,
            role="roles/pubsub.publisher",
            member=agent,
            opts=child,
        )
        gcp.pubsub.SubscriptionIAMMember(
            f"{name}-dlq-subscriber",
            project=project,
            subscription=self.subscription.name,
            role="roles/pubsub.subscriber",
            member=agent,
            opts=child,
        )
        self.outputs = {
            "subscription": self.subscription.id,
            "deadLetterTopic": dlq.id,
            "deadLetterSubscription": dlq_subscription.id,
        }
        self.register_outputs(self.outputs)

    def portal(self) -> dict[str, Any]:
        """The subscription's fields in the department's portal document, the same on every cloud."""
        return {
            "name": self.subscription.id,
            "topic": self.topic,
            "filter": job_filter(self.department),
            "deadLetterTopic": self.dead_letter_topic,
        }
