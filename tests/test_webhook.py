"""POST /webhook with GitHub's real example payloads, signed like GitHub signs them."""

from __future__ import annotations

import copy
import io
import json
import logging
import sqlite3
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from scaler import naming
from scaler.agent.cli import open_subscriber
from scaler.bus.sqlite import SqliteBus
from scaler.logs import JsonFormatter
from scaler.webhook.app import LOGGER_NAME
from tests.harness.webhooks import (
    PREVIOUS_SECRET,
    ROUTES,
    SECRET,
    Example,
    WebhookIntake,
    as_if_now,
    conforming,
    load_examples,
    make_intake,
    sign,
)

EXAMPLES = load_examples()
JOBS = [e for e in EXAMPLES if e.event == "workflow_job"]


def _owner(payload: dict) -> str:
    org = payload.get("organization") or {}
    return org.get("login") or payload["repository"]["full_name"].split("/")[0]


def _route_for(org: str) -> tuple[str, str, list[str]]:
    for dept in ROUTES["departments"]:
        if dept["org"].lower() == org.lower():
            group = dept["groups"][0]
            return dept["name"], group["name"], group["labels"]
    raise AssertionError(f"no test route for {org}")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_examples_as_github_sends_them(webhook_intake: WebhookIntake, example: Example) -> None:
    delivery = str(uuid.uuid4())
    response = webhook_intake.post(example.body, example.event, delivery)
    published = webhook_intake.published()
    if example.event == "ping":
        assert (response.status_code, response.json["status"]) == (200, "pong")
        assert published == []
        return
    labels = {label.lower() for label in example.payload["workflow_job"]["labels"]}
    if labels == {"ubuntu-latest"}:
        # GitHub-hosted: accepted, nobody to tell.
        assert (response.status_code, response.json["status"]) == (202, "github_hosted")
        assert published == []
        return
    assert (response.status_code, response.json["status"]) == (202, "published"), response.json
    [message] = published
    assert message.data == example.body
    expected = {"platform": "k8s", "data": "gpu"}
    department = response.json["department"]
    assert message.attributes == {
        "department": department,
        "group": expected[department],
        "action": example.action,
        "job_id": str(example.payload["workflow_job"]["id"]),
        "delivery": delivery,
    }


@pytest.mark.parametrize("example", JOBS, ids=lambda e: e.id)
def test_every_job_example_lands_with_its_route(webhook_intake: WebhookIntake, example: Example) -> None:
    payload = copy.deepcopy(example.payload)
    department, group, labels = _route_for(_owner(payload))
    payload["workflow_job"]["labels"] = ["self-hosted", labels[-1]]
    body = conforming("workflow_job", payload, base=example.payload)
    delivery = str(uuid.uuid4())
    response = webhook_intake.post(body, "workflow_job", delivery)
    assert response.status_code == 202, response.json
    [message] = webhook_intake.published()
    assert message.data == body
    assert message.attributes == {
        "department": department,
        "group": group,
        "action": example.action,
        "job_id": str(payload["workflow_job"]["id"]),
        "delivery": delivery,
    }


def _form(body: bytes) -> bytes:
    return ("payload=" + urllib.parse.quote_plus(body.decode("utf-8"))).encode("ascii")


BAD = {
    "wrong-secret": (401, lambda e: {"body": e.body, "secret": "not the secret"}),
    "missing-signature": (401, lambda e: {"body": e.body, "signature": ""}),
    "not-sha256": (401, lambda e: {"body": e.body, "signature": "sha1=" + sign(e.body, SECRET)[7:47]}),
    "truncated-body": (401, lambda e: {"body": e.body[: len(e.body) // 2], "signature": sign(e.body, SECRET)}),
    "form-encoded": (415, lambda e: {"body": _form(e.body), "content_type": "application/x-www-form-urlencoded"}),
    "text-plain": (415, lambda e: {"body": e.body, "content_type": "text/plain"}),
    "no-content-type": (415, lambda e: {"body": e.body, "content_type": ""}),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_bad_requests_publish_nothing(webhook_intake: WebhookIntake, example: Example, case: str) -> None:
    status, make = BAD[case]
    kwargs = make(example)
    response = webhook_intake.post(event=example.event, **kwargs)
    assert response.status_code == status
    assert response.json["error"]
    assert webhook_intake.published() == []


def test_form_encoded_delivery_is_told_what_to_change(webhook_intake: WebhookIntake) -> None:
    body = _form(JOBS[-1].body)
    response = webhook_intake.post(body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.json["error"]


def test_previous_secret_is_accepted_during_rotation(webhook_intake: WebhookIntake) -> None:
    example = JOBS[-1]  # lineville waiting: self-hosted, routed
    assert webhook_intake.post(example.body, secret=PREVIOUS_SECRET).status_code == 202
    assert webhook_intake.post(example.body, secret="some third secret").status_code == 401
    assert len(webhook_intake.published()) == 1


def test_redelivery_of_the_same_guid_publishes_nothing_new(webhook_intake: WebhookIntake, tmp_path: Path) -> None:
    example, delivery = JOBS[-1], str(uuid.uuid4())
    first = webhook_intake.post(example.body, delivery=delivery)
    again = webhook_intake.post(example.body, delivery=delivery)
    assert (first.json["status"], again.json["status"]) == ("published", "duplicate")
    # A second gunicorn worker (another app on the same bus file) has not seen the GUID;
    # the bus's UNIQUE delivery column still keeps it to one message.
    other = make_intake(tmp_path)
    assert other.post(example.body, delivery=delivery).status_code == 202
    assert len(webhook_intake.published()) == 1
    # The next state of the same job (GitHub sends one delivery per state change) is a new event.
    queued = next(e for e in JOBS if e.action == "queued" and e.payload["workflow_job"]["id"] == _job_id(example))
    assert webhook_intake.post(queued.body).json["status"] == "published"
    assert len(webhook_intake.published()) == 1


def _job_id(example: Example) -> int:
    return int(example.payload["workflow_job"]["id"])


def test_a_replay_with_a_fresh_guid_is_a_duplicate(webhook_intake: WebhookIntake) -> None:
    """The signature covers the body, not X-GitHub-Delivery: a captured delivery resent with a new GUID."""
    example = JOBS[-1]
    assert webhook_intake.post(example.body).json["status"] == "published"
    replay = webhook_intake.post(example.body, delivery=str(uuid.uuid4()))
    assert (replay.status_code, replay.json["status"]) == (202, "duplicate")
    assert len(webhook_intake.published()) == 1
    # A re-run of the workflow (run_attempt 2) is a new event, even with every other field equal.
    payload = copy.deepcopy(example.payload)
    payload["workflow_job"]["run_attempt"] = 2
    assert webhook_intake.post(conforming("workflow_job", payload, base=example.payload)).json["status"] == "published"
    assert len(webhook_intake.published()) == 1


def test_an_event_that_got_503_is_not_remembered(tmp_path: Path) -> None:
    """GitHub's redelivery of a failed delivery (or a new delivery of the same event) is published."""
    bus_path = tmp_path / "bus.db"
    intake = make_intake(tmp_path, publisher=SqliteBus(bus_path, busy_timeout=0.1))
    blocker = sqlite3.connect(bus_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert intake.post(JOBS[-1].body).status_code == 503
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert intake.post(JOBS[-1].body, delivery=str(uuid.uuid4())).json["status"] == "published"
    assert len(intake.published()) == 1


@pytest.mark.parametrize(("age_days", "status"), [(2.9, 202), (3.2, 400), (400, 400)])
def test_events_older_than_githubs_redelivery_window_are_refused(
    webhook_intake: WebhookIntake, age_days: float, status: int
) -> None:
    example = JOBS[-1]
    payload = as_if_now(copy.deepcopy(example.payload), now=time.time() - age_days * 86400)
    response = webhook_intake.post(conforming("workflow_job", payload, base=example.payload))
    assert response.status_code == status, response.json
    if status == 400:
        assert response.json["status"] == "stale_event"
        assert "redelivery window" in response.json["error"]
        assert webhook_intake.published() == []
    else:
        assert len(webhook_intake.published()) == 1


def test_a_job_without_any_timestamp_is_400(webhook_intake: WebhookIntake) -> None:
    payload = copy.deepcopy(JOBS[-1].payload)
    for key in ("created_at", "started_at", "completed_at"):
        payload["workflow_job"][key] = None
    response = webhook_intake.post(json.dumps(payload).encode())
    assert response.status_code == 400 and "timestamp" in response.json["error"]
    assert webhook_intake.published() == []


@pytest.mark.parametrize(("job_id", "status"), [(10**20, 400), (2**63, 400), (0, 400), (-5, 400), (2**63 - 1, 202)])
def test_job_ids_github_cannot_send_are_refused(webhook_intake: WebhookIntake, job_id: int, status: int) -> None:
    """A queued id of 10^20 would make the agent's instance_name raise on every pass."""
    example = JOBS[-1]
    payload = copy.deepcopy(example.payload)
    payload["workflow_job"]["id"] = job_id
    response = webhook_intake.post(conforming("workflow_job", payload, base=example.payload))
    assert response.status_code == status, response.json
    if status == 400:
        assert "64-bit" in response.json["error"]
        assert webhook_intake.published() == []
    else:
        [message] = webhook_intake.published()
        assert naming.instance_name("platform", "k8s", message.attributes["job_id"])


def test_an_event_published_before_the_agent_ever_ran_reaches_it(tmp_path: Path) -> None:
    """Embedded bus: the webhook creates the departments' subscriptions from the routing table."""
    bus = tmp_path / "bus.db"
    intake = make_intake(tmp_path, publisher=SqliteBus(bus))
    assert intake.post(JOBS[-1].body).json["status"] == "published"  # routed to "platform"
    agent = open_subscriber(f"sqlite://{bus}", "platform")  # the agent's first start, afterwards
    [message] = agent.pull(max_messages=10, timeout=0)
    assert message.data == JOBS[-1].body


def test_without_a_subscription_the_answer_is_503_not_202(tmp_path: Path) -> None:
    """If the subscriptions cannot be created at start, events are refused (GitHub can redeliver), not lost."""
    unavailable = tmp_path / "bus"
    unavailable.write_text("a file where the bus's directory should be")
    bus = unavailable / "bus.db"
    intake = make_intake(tmp_path, publisher=SqliteBus(bus, busy_timeout=0.1))
    delivery = str(uuid.uuid4())
    response = intake.post(JOBS[-1].body, delivery=delivery)
    assert (response.status_code, response.json["status"]) == (503, "bus_unavailable")
    unavailable.unlink()  # the volume is back
    assert intake.post(JOBS[-1].body, delivery=delivery).json["status"] == "published"  # the redelivery
    [message] = open_subscriber(f"sqlite://{bus}", "platform").pull(max_messages=10, timeout=0)
    assert message.attributes["delivery"] == delivery


def test_readyz_reflects_failed_publishes(tmp_path: Path) -> None:
    """A full disk: reads still work, every publish fails; /readyz must say so."""
    now = [time.time()]
    publisher = SqliteBus(tmp_path / "bus.db")
    intake = make_intake(tmp_path, publisher=publisher, clock=lambda: now[0])
    assert intake.client.get("/readyz").status_code == 200
    db = publisher._connection()  # the request thread's connection (the test client runs in this thread)
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL, as on a full disk
    assert intake.post(JOBS[-1].body).status_code == 503
    assert publisher.ready()  # the read probe alone says all is well
    assert intake.client.get("/readyz").status_code == 503
    now[0] += 31  # out of rotation for a while, then back to try again
    assert intake.client.get("/readyz").status_code == 200
    assert intake.post(JOBS[-1].body).status_code == 503
    assert intake.client.get("/readyz").status_code == 503
    db.execute("PRAGMA max_page_count = 1000000")  # space again
    assert intake.post(JOBS[-1].body).json["status"] == "published"
    assert intake.client.get("/readyz").status_code == 200


def test_bus_down_answers_503_and_a_redelivery_is_published(tmp_path: Path) -> None:
    bus_path = tmp_path / "bus.db"
    intake = make_intake(tmp_path, publisher=SqliteBus(bus_path, busy_timeout=0.1))
    example, delivery = JOBS[-1], str(uuid.uuid4())
    blocker = sqlite3.connect(bus_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: the bus cannot accept writes
    try:
        response = intake.post(example.body, delivery=delivery)
        assert response.status_code == 503
        assert response.json["status"] == "bus_unavailable"
        # Still ready: the bus is reachable, only its writer's lock is taken. Taking the instance out of the
        # load balancer for that would turn GitHub's retryable 503 into a connection error for every delivery.
        ready = intake.client.get("/readyz")
        assert (ready.status_code, ready.json) == (200, {"status": "ready"})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert intake.published() == []
    # GitHub (or `garo redeliver`) sends the same GUID again: it must not be treated as a duplicate.
    assert intake.post(example.body, delivery=delivery).json["status"] == "published"
    assert [m.attributes["delivery"] for m in intake.published()] == [delivery]


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    intake = make_intake(tmp_path, max_body_bytes=4096)
    payload = copy.deepcopy(JOBS[-1].payload)
    payload["workflow_job"]["steps"] = [
        {
            "name": "x" * 100,
            "status": "queued",
            "conclusion": None,
            "number": i,
            "started_at": None,
            "completed_at": None,
        }
        for i in range(60)
    ]
    body = conforming("workflow_job", payload)
    response = intake.post(body)
    assert response.status_code == 413
    assert response.json["status"] == "too_large"
    assert intake.published() == []


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[1, 2]", {}, "not a JSON object"),
        (b'{"action": "queued"}', {}, "need action, workflow_job and repository"),
        (b"\xff\xfe", {}, "not valid JSON"),
        (JOBS[-1].body, {"X-GitHub-Delivery": ""}, "X-GitHub-Delivery"),
        (JOBS[-1].body, {"X-GitHub-Event": ""}, "X-GitHub-Event"),
    ],
)
def test_malformed_signed_requests_are_400(
    webhook_intake: WebhookIntake, body: bytes, headers: dict, error: str
) -> None:
    response = webhook_intake.post(body, headers=headers)
    assert response.status_code == 400
    assert error in response.json["error"]
    assert webhook_intake.published() == []


def test_missing_job_fields_are_400(webhook_intake: WebhookIntake) -> None:
    for field, value in (("id", "12"), ("labels", "self-hosted")):
        payload = copy.deepcopy(JOBS[-1].payload)
        payload["workflow_job"][field] = value
        response = webhook_intake.post(json.dumps(payload).encode())
        assert response.status_code == 400, field
        assert f"workflow_job.{field}" in response.json["error"]
    assert webhook_intake.published() == []


def test_other_events_and_actions_are_accepted_and_ignored(webhook_intake: WebhookIntake) -> None:
    assert webhook_intake.post(b'{"zen": "push"}', event="push").json["status"] == "ignored"
    payload = copy.deepcopy(JOBS[-1].payload)
    payload["action"] = "requeued"  # an action GitHub might add one day
    response = webhook_intake.post(json.dumps(payload).encode())
    assert (response.status_code, response.json["status"]) == (202, "ignored")
    assert webhook_intake.published() == []


def test_wrong_method_and_path_get_json_errors(webhook_intake: WebhookIntake) -> None:
    response = webhook_intake.client.get("/webhook")
    assert response.status_code == 405
    assert response.json["status"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    assert webhook_intake.client.post("/elsewhere").status_code == 404


def test_unmatched_self_hosted_job_is_counted_and_logged(webhook_intake: WebhookIntake) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    try:
        payload = copy.deepcopy(JOBS[-1].payload)
        payload["workflow_job"]["labels"] = ["self-hosted", "quantum"]
        response = webhook_intake.post(conforming("workflow_job", payload))
        routed = webhook_intake.post(JOBS[-1].body)
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
    assert (response.status_code, response.json["status"]) == (202, "unmatched")
    assert routed.json["status"] == "published"
    assert len(webhook_intake.published()) == 1
    metrics = webhook_intake.client.get("/metrics").text
    assert 'garo_webhook_unmatched_jobs_total{action="waiting"} 1.0' in metrics
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    unmatched = next(line for line in lines if line["outcome"] == "unmatched")
    assert unmatched["labels"] == ["self-hosted", "quantum"]
    assert unmatched["job_id"] == str(payload["workflow_job"]["id"])
    published = next(line for line in lines if line["outcome"] == "published")
    assert published["department"] == "platform" and published["delivery"]
    text = stream.getvalue()
    assert SECRET not in text and "elastic-machines-testing/actions/runs" not in text


def test_health_readiness_and_metrics(webhook_intake: WebhookIntake, tmp_path: Path) -> None:
    assert webhook_intake.client.get("/healthz").status_code == 200
    assert webhook_intake.client.get("/readyz").json == {"status": "ready"}
    webhook_intake.post(JOBS[-1].body)
    webhook_intake.post(JOBS[-1].body, secret="wrong")
    metrics = webhook_intake.client.get("/metrics").text
    assert 'garo_webhook_requests_total{outcome="published"} 1.0' in metrics
    assert 'garo_webhook_requests_total{outcome="bad_signature"} 1.0' in metrics
    assert "garo_webhook_publish_seconds_count 1.0" in metrics
    (tmp_path / "a-file").write_text("not a directory")
    gone = make_intake(tmp_path / "x", publisher=SqliteBus(tmp_path / "a-file" / "bus.db", busy_timeout=0.1))
    assert gone.client.get("/readyz").status_code == 503


def test_absurdly_nested_json_is_a_400_not_a_500(webhook_intake: WebhookIntake) -> None:
    response = webhook_intake.post(b"[" * 100_000)  # signed: only a sender with the secret gets this far
    assert response.status_code == 400
    assert webhook_intake.published() == []
