"""The intake on Google Pub/Sub: the real client on the wire against the fake server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaler.bus.pubsub import PubSubPublisher, PubSubSubscriber
from scaler.bus.url import open_publisher
from tests.harness.pubsub import PubSubEmulator
from tests.harness.webhooks import WebhookIntake, load_examples, make_intake

ROUTED = [
    e for e in load_examples() if e.event == "workflow_job" and "self-hosted" in e.payload["workflow_job"]["labels"]
]


@pytest.fixture
def intake(pubsub_emulator: PubSubEmulator, tmp_path: Path) -> Iterator[WebhookIntake]:
    pubsub_emulator.create_topic("jobs")
    pubsub_emulator.create_subscription("platform", "jobs", filter='attributes.department = "platform"')
    pubsub_emulator.create_subscription("data", "jobs", filter='attributes.department = "data"')
    publisher = open_publisher(f"pubsub://{pubsub_emulator.project}/jobs?timeout=2")
    assert isinstance(publisher, PubSubPublisher)
    yield make_intake(tmp_path, publisher=publisher)
    publisher.close()


@pytest.mark.parametrize("example", ROUTED, ids=lambda e: e.id)
def test_accepted_events_reach_their_department(
    pubsub_emulator: PubSubEmulator, intake: WebhookIntake, example
) -> None:
    delivery = str(uuid.uuid4())
    response = intake.post(example.body, delivery=delivery)
    assert response.status_code == 202, response.json
    [stored] = pubsub_emulator.published("jobs")
    job_id = str(example.payload["workflow_job"]["id"])
    assert stored.data == example.body
    assert stored.ordering_key == ""  # events of a job are not ordered on the bus: see scaler/webhook/app.py
    assert stored.attributes == {
        "department": "platform",
        "group": "k8s",
        "action": example.action,
        "job_id": job_id,
        "delivery": delivery,
    }
    subscriber = PubSubSubscriber(pubsub_emulator.project, "platform", timeout=2.0)
    try:
        [message] = subscriber.pull(timeout=2)
        assert message.data == example.body and message.attributes["delivery"] == delivery
    finally:
        subscriber.close()
    assert pubsub_emulator.unacked("data") == 0  # the other department's filter kept it out


@pytest.mark.timeout(60)
def test_bus_down_is_503_and_the_redelivery_is_published(
    pubsub_emulator: PubSubEmulator, intake: WebhookIntake
) -> None:
    example, delivery = ROUTED[0], str(uuid.uuid4())
    with pubsub_emulator.down():
        response = intake.post(example.body, delivery=delivery)
        assert response.status_code == 503
        assert response.json["status"] == "bus_unavailable"
        assert intake.client.get("/readyz").status_code == 503
    assert pubsub_emulator.published("jobs") == []
    # GitHub's redelivery (same GUID) once Pub/Sub is back: published, not taken for a duplicate.
    intake.app.extensions["garo_webhook"].publisher.timeout = 10.0  # room for gRPC's reconnect backoff
    again = intake.post(example.body, delivery=delivery)
    assert (again.status_code, again.json["status"]) == (202, "published")
    assert [m.attributes["delivery"] for m in pubsub_emulator.published("jobs")] == [delivery]
    # ...and a third delivery of that GUID is the duplicate.
    assert intake.post(example.body, delivery=delivery).json["status"] == "duplicate"
    assert len(pubsub_emulator.published("jobs")) == 1
