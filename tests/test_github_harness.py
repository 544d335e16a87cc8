"""Prism really enforces GitHub's OpenAPI description, so passing tests against it mean something."""

from __future__ import annotations

import requests

from scaler.github.client import GitHubClient

HEADERS = {"Accept": "application/vnd.github+json, application/json", "Authorization": "Bearer test"}


def test_prism_rejects_jit_request_without_runner_group_id(prism_github: str) -> None:
    response = requests.post(
        f"{prism_github}/orgs/acme/actions/runners/generate-jitconfig",
        json={"name": "garo-dep-grp-1", "labels": ["self-hosted", "linux"]},
        headers=HEADERS,
        timeout=30,
    )
    assert response.status_code == 422
    assert "runner_group_id" in response.headers["sl-violations"]


def test_prism_rejects_non_integer_path_and_query_params(prism_github: str) -> None:
    bad_id = requests.delete(f"{prism_github}/orgs/acme/actions/runners/not-a-number", headers=HEADERS, timeout=30)
    bad_page = requests.get(f"{prism_github}/orgs/acme/actions/runners?per_page=many", headers=HEADERS, timeout=30)
    assert (bad_id.status_code, bad_page.status_code) == (422, 422)


def test_prism_accepts_valid_jit_request_and_client_parses_it(prism_github: str) -> None:
    response = requests.post(
        f"{prism_github}/orgs/acme/actions/runners/generate-jitconfig",
        json={"name": "garo-dep-grp-1", "runner_group_id": 1, "labels": ["self-hosted"]},
        headers=HEADERS,
        timeout=30,
    )
    assert response.status_code == 201
    client = GitHubClient("acme", token="dev-token", api_url=prism_github)
    jit = client.generate_jit_config("garo-dep-grp-1", 1, ["self-hosted", "linux"])
    body = response.json()
    assert (jit.runner_id, jit.runner_name, jit.encoded) == (
        body["runner"]["id"],
        body["runner"]["name"],
        body["encoded_jit_config"],
    )


def test_prefer_header_selects_a_documented_error_response(prism_github: str, prism_session) -> None:
    session = prism_session({("DELETE", r"/runners/\d+$"): "code=422"})
    response = session.delete(f"{prism_github}/orgs/acme/actions/runners/7", headers=HEADERS, timeout=30)
    untouched = session.get(f"{prism_github}/orgs/acme/actions/runners", headers=HEADERS, timeout=30)
    assert (response.status_code, untouched.status_code) == (422, 200)
