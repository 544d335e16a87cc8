"""A department's subscription on the hub's topic.

The webhook publishes every routed job once, with a ``department`` attribute;
each department's subscription filters on it, so a department never sees (or
can ack) another's jobs. Messages the scaler fails to handle ten times go to
the hub's dead-letter topic, which needs two grants to the Pub/Sub service
agent of this project: publisher on the dead-letter topic and subscriber on
this subscription (so it can ack what it forwarded).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from scaler.config import StackConfig

DEFAULT_TOPIC = "garo-workflow-jobs"
MAX_DELIVERY_ATTEMPTS = 10


def job_filter(department: str) -> str:
    return f'attributes.department = "{department}"'


def hub_topics(config: StackConfig) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """(topic, dead-letter topic) from garo:hubTopic, the hub stack's outputs, or the default name."""
    if config.hub_stack:
        hub = pulumi.StackReference(config.hub_stack)
        topic = pulumi.Output.from_input(hub.require_output("topic")).apply(str)
        return topic, pulumi.Output.from_input(hub.require_output("deadLetterTopic")).apply(str)
    topic_path = config.hub_topic or f"projects/{config.project}/topics/{DEFAULT_TOPIC}"
    return pulumi.Output.from_input(topic_path), pulumi.Output.from_input(f"{topic_path}-dlq")


class JobSubscription(pulumi.ComponentResource):
    """The filtered subscription with dead-lettering, and the service agent's grants."""

    subscription: gcp.pubsub.Subscription
    topic: pulumi.Output[str]
    dead_letter_topic: pulumi.Output[str]
    #: Registered outputs: the subscription's id.
    outputs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:JobSubscription", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        dept, project = config.department, config.project
        self.topic, self.dead_letter_topic = hub_topics(config)
        self.subscription = gcp.pubsub.Subscription(
            f"{name}-subscription",
            name=f"garo-{dept}-jobs",
            project=project,
            topic=self.topic,
            filter=job_filter(dept),
            labels=dict(config.resource_labels),
            # Long enough for a JIT config round trip; the agent extends it while it works.
            ack_deadline_seconds=60,
            # A job queued for more than a day has been cancelled by GitHub.
            message_retention_duration="86400s",
            expiration_policy={"ttl": ""},
            retry_policy={"minimum_backoff": "10s", "maximum_backoff": "600s"},
            dead_letter_policy={
                "dead_letter_topic": self.dead_letter_topic,
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
            opts=child,
        )
        number = gcp.organizations.get_project_output(project_id=project).number
        agent = number.apply(lambda n: f"serviceAccount:service-{n}@gcp-sa-pubsub.iam.gserviceaccount.com")
        gcp.pubsub.TopicIAMMember(
            f"{name}-dlq-publisher",
            topic=self.dead_letter_topic,
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
        self.outputs = {"subscription": self.subscription.id}
        self.register_outputs(self.outputs)
