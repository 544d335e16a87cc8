"""Random headers and bodies at POST /webhook: never a 5xx, nothing published without a valid signature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label_example
from hypothesis import strategies as st

from tests.harness.webhooks import SECRET, WebhookIntake, load_examples, make_intake, sign

EXAMPLES = load_examples()
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> WebhookIntake:
    return make_intake(Path(tmp_path_factory.mktemp("fuzz")), max_body_bytes=64 * 1024)


def _json_bodies() -> st.SearchStrategy[bytes]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4)
    )
    return values.map(lambda v: json.dumps(v).encode())


def _mutated_examples() -> st.SearchStrategy[bytes]:
    """Real payloads with one field replaced by something arbitrary."""

    def mutate(args: tuple) -> bytes:
        example, path, value = args
        payload = example.payload
        target = payload
        for key in path[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[path[-1]] = value
        return json.dumps(payload).encode()

    paths = st.sampled_from(
        [
            ("action",),
            ("workflow_job",),
            ("workflow_job", "id"),
            ("workflow_job", "labels"),
            ("repository",),
            ("repository", "full_name"),
            ("organization",),
            ("organization", "login"),
        ]
    )
    anything = st.none() | st.integers() | st.text(max_size=10) | st.lists(st.text(max_size=8), max_size=3)
    return st.tuples(st.sampled_from(EXAMPLES), paths, anything).map(mutate)


bodies = (
    st.sampled_from([e.body for e in EXAMPLES])
    | st.sampled_from([e.body for e in EXAMPLES])
    | _mutated_examples()
    | _json_bodies()
    | st.binary(max_size=2048)
    | st.sampled_from([e.body[:n] for e in EXAMPLES[:3] for n in (0, 1, 100)])
)


def _mostly(common: list[str], weight: int = 4) -> st.SearchStrategy[str]:
    """Usually one of ``common`` (so valid requests get through), sometimes arbitrary text."""
    return st.sampled_from([*common * weight, "\0"]).flatmap(lambda v: header_text if v == "\0" else st.just(v))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies,
    signature_kind=st.sampled_from(["valid"] * 5 + ["other-body", "random", "absent", "wrong-secret"]),
    random_signature=header_text,
    event=_mostly(["workflow_job", "workflow_job", "ping", "push", ""]),
    delivery=st.sampled_from(["guid"] * 6 + ["", "text"]).flatmap(
        lambda k: st.uuids().map(str) if k == "guid" else header_text if k == "text" else st.just("")
    ),
    content_type=_mostly(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    method=st.sampled_from(["POST"] * 12 + ["GET", "PUT"]),
)
def test_random_requests(
    intake: WebhookIntake,
    body: bytes,
    signature_kind: str,
    random_signature: str,
    event: str,
    delivery: str,
    content_type: str,
    method: str,
) -> None:
    signature = {
        "valid": sign(body, SECRET),
        "other-body": sign(body + b" ", SECRET),
        "random": random_signature,
        "absent": "",
        "wrong-secret": sign(body, "guess"),
    }[signature_kind]
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature}
    headers["Content-Type"] = content_type
    response = intake.client.open("/webhook", method=method, data=body, headers={k: v for k, v in headers.items() if v})
    assert response.status_code < 500, response.get_data()
    assert response.is_json and "status" in response.json
    label_example(f"{response.status_code} {response.json['status']}")
    published = intake.published()
    if signature_kind != "valid" or method != "POST":
        assert response.status_code in (401, 405, 413)
        assert published == []
    if published:
        assert response.status_code == 202 and response.json["status"] == "published"
        [message] = published
        assert message.data == body and message.attributes["delivery"] == delivery
