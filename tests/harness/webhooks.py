"""GitHub webhook stand-ins: the real example payloads and schemas from @octokit.

``webhook_examples`` are the ``workflow_job`` and ``ping`` examples of
``@octokit/webhooks-examples`` (api.github.com), serialised once to the bytes
GitHub sends (compact UTF-8 JSON) and signed with :func:`sign` exactly as
GitHub signs them. Their job timestamps are moved to the test run (the
newest one a minute ago, the gaps between them kept): GitHub sends events as
they happen, and the webhook refuses events older than its redelivery window. Any payload a test changes goes through
:func:`conforming`, which validates it against ``@octokit/webhooks-schemas``,
so a test never relies on a payload GitHub could not send.

``webhook_intake`` is the app on an embedded SQLite bus in a temporary
directory, with a routing table that sends the examples' self-hosted jobs to
departments, and a tap subscription that sees everything published.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from scaler.bus.base import Message
from scaler.bus.sqlite import SqliteBus
from scaler.config.routing import load_routing_table
from scaler.demo.examples import as_if_now
from scaler.webhook import WebhookSettings, create_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "node_modules/@octokit/webhooks-examples/api.github.com/index.json"
SCHEMA = ROOT / "node_modules/@octokit/webhooks-schemas/schema.json"
SECRET = "It's a Secret to Everybody"
PREVIOUS_SECRET = "the secret being rotated out"

# Routes for the examples' jobs: lineville/elastic-machines-testing asks for
# [self-hosted, k8s]; octo-org/example-workflow for [gpu, db-app, dc-03].
ROUTES: dict[str, Any] = {
    "version": 1,
    "departments": [
        {
            "name": "platform",
            "org": "lineville",
            "groups": [{"name": "k8s", "labels": ["self-hosted", "linux", "x64", "k8s"]}],
        },
        {
            "name": "data",
            "org": "octo-org",
            "groups": [
                {"name": "gpu", "labels": ["self-hosted", "linux", "x64", "gpu", "db-app", "dc-03"]},
                {"name": "cpu", "labels": ["self-hosted", "linux", "x64", "data-cpu"], "repositories": ["etl"]},
            ],
        },
        {
            "name": "web",
            "org": "Codertocat",
            "groups": [{"name": "small", "labels": ["self-hosted", "linux", "x64", "web-small"]}],
        },
        {
            "name": "ops",
            "org": "Octocoders",
            "groups": [{"name": "build", "labels": ["self-hosted", "linux", "x64", "ops-build"]}],
        },
        {
            "name": "schemas",
            "org": "wolfy1339",
            "groups": [{"name": "ci", "labels": ["self-hosted", "linux", "x64", "schemas-ci"]}],
        },
    ],
}


def sign(body: bytes, secret: str) -> str:
    """X-Hub-Signature-256 as GitHub computes it: ``sha256=`` + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def to_bytes(payload: Mapping[str, Any]) -> bytes:
    """Serialise like GitHub: compact JSON, UTF-8, non-ASCII kept as is."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Example:
    event: str
    action: str | None
    index: int
    body: bytes = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.event}-{self.action or 'event'}-{self.index}"

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@cache
def load_examples() -> tuple[Example, ...]:
    examples: list[Example] = []
    for entry in json.loads(EXAMPLES.read_text(encoding="utf-8")):
        if entry["name"] in ("workflow_job", "ping"):
            for i, payload in enumerate(entry["examples"]):
                examples.append(Example(entry["name"], payload.get("action"), i, to_bytes(as_if_now(payload))))
    assert {e.event for e in examples} == {"workflow_job", "ping"}, "webhook examples missing: run `npm ci`"
    return tuple(examples)


@cache
def _validators() -> dict[str, jsonschema.Draft7Validator]:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    wanted = [k for k in schema["definitions"] if k.startswith(("workflow_job$", "ping$"))]
    return {
        k: jsonschema.Draft7Validator({"$ref": f"#/definitions/{k}", "definitions": schema["definitions"]})
        for k in wanted
    }


def _errors(event: str, payload: Mapping[str, Any]) -> set[tuple[str, str]]:
    key = f"{event}$event" if event == "ping" else f"{event}${payload['action']}"
    return {(e.json_path, e.message) for e in _validators()[key].iter_errors(dict(payload))}


def conforming(event: str, payload: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> bytes:
    """The payload's bytes, after checking it against @octokit/webhooks-schemas.

    A few of octokit's own (older) examples miss fields the current schema
    requires; with ``base`` (the example a test started from) only problems
    the test's change introduced fail.
    """
    new = _errors(event, payload) - (_errors(event, base) if base is not None else set())
    if new:
        raise AssertionError(f"mutated {event} payload breaks @octokit/webhooks-schemas: {sorted(new)[:5]}")
    return to_bytes(payload)


@dataclass
class WebhookIntake:
    """The app under test with its bus; ``post`` signs like GitHub unless told otherwise."""

    app: Flask
    client: FlaskClient
    bus_path: Path
    tap: SqliteBus
    secret: str = SECRET

    def post(
        self,
        body: bytes,
        event: str = "workflow_job",
        delivery: str | None = None,
        *,
        secret: str | None = None,
        signature: str | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> TestResponse:
        all_headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature if signature is not None else sign(body, secret or self.secret),
            "Content-Type": content_type,
            "User-Agent": "GitHub-Hookshot/test",
        }
        all_headers.update(headers or {})
        return self.client.post("/webhook", data=body, headers={k: v for k, v in all_headers.items() if v != ""})

    def published(self) -> list[Message]:
        """Everything published since the fixture started (acknowledged, so each call returns new ones)."""
        messages = list(self.tap.pull(max_messages=1000, timeout=0))
        if messages:
            self.tap.ack([m.ack_id for m in messages])
        return messages


def make_intake(tmp_path: Path, *, testing: bool = True, **overrides: Any) -> WebhookIntake:
    """The app on a fresh SQLite bus; ``overrides`` are WebhookSettings fields.

    With ``testing`` (Flask's TESTING) a bug in a view raises in the test
    instead of becoming a 500 that a status assertion might accept; pass
    False to see what a client sees, and what is logged, when a view fails.
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    routes_path = tmp_path / "routes.json"
    routes_path.write_text(json.dumps(ROUTES), encoding="utf-8")
    bus_path = tmp_path / "bus.db"
    publisher = overrides.pop("publisher", None) or SqliteBus(bus_path)
    tap = SqliteBus(bus_path, subscription="tap")
    settings = WebhookSettings(
        secrets=(SECRET.encode(), PREVIOUS_SECRET.encode()),
        routes=load_routing_table(routes_path),
        publisher=publisher,
        **overrides,
    )
    app = create_app(settings)
    app.testing = testing
    return WebhookIntake(app=app, client=app.test_client(), bus_path=bus_path, tap=tap)


@pytest.fixture(scope="session")
def webhook_examples() -> tuple[Example, ...]:
    return load_examples()


@pytest.fixture
def webhook_intake(tmp_path: Path) -> Iterator[WebhookIntake]:
    intake = make_intake(tmp_path)
    yield intake
    intake.tap.close()
