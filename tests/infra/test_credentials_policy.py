"""Credential isolation, checked on every IAM binding the mocked program declares (docs/security.md).

A department's stack may grant access only to its own resources, in its own
project; its scaler reads one secret, its own runner credential; the hub
holds no runner credential and grants its webhook App's key to nobody; only
the webhook's identity may publish to the hub's topic; dead letters stay in
the department's own project.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaler.config import load_stack_file
from tests.infra.conftest import EXAMPLES, STACKS, of_type, run_captures

DEPARTMENTS = tuple(s for s in STACKS if s != "hub")
IAM_KINDS = ("IAMMember", "IamMember")
# Which input names the resource an IAM binding is on, per binding type.
TARGET = {"SecretIamMember": "secretId", "TopicIAMMember": "topic", "SubscriptionIAMMember": "subscription"}


def project_of(stack: str) -> str:
    project = load_stack_file(EXAMPLES / f"Pulumi.{stack}.yaml").project
    assert project
    return project


def bindings(capture: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for kind in IAM_KINDS for r in of_type(capture, kind)]


def target_project(binding: dict[str, Any], own: str) -> str:
    """The project of what a binding grants on (a bare name is in the binding's or the stack's project)."""
    kind = binding["type"].split(":")[-1]
    inputs = binding["inputs"]
    if kind in TARGET:
        target = str(inputs[TARGET[kind]])
        if target.startswith("projects/"):
            return target.split("/")[1]
        return str(inputs.get("project") or own)
    return str(inputs.get("project") or own)


@pytest.mark.parametrize("stack", STACKS)
def test_a_stack_grants_nothing_outside_its_own_project(captures: dict[str, Any], stack: str) -> None:
    own = project_of(stack)
    others = {project_of(s) for s in STACKS} - {own}
    for binding in bindings(captures[stack]):
        assert target_project(binding, own) == own, f"{stack}: {binding['name']} grants on another project"
        assert not any(p in json.dumps(binding["inputs"]) for p in others), binding["name"]


@pytest.mark.parametrize("stack", DEPARTMENTS)
def test_the_scaler_reads_only_its_own_runner_credential(captures: dict[str, Any], stack: str) -> None:
    grants = [b["inputs"] for b in of_type(captures[stack], "SecretIamMember")]
    assert [(g["secretId"], g["member"], g["role"]) for g in grants] == [
        (
            f"projects/{project_of(stack)}/secrets/garo-{stack}-runner-app-key",
            f"serviceAccount:garo-{stack}-scaler@{project_of(stack)}.iam.gserviceaccount.com",
            "roles/secretmanager.secretAccessor",
        )
    ]
    # Its env names that secret, and no other credential.
    [template] = [
        t for t in of_type(captures[stack], "InstanceTemplate") if t["inputs"]["labels"]["garo-group"] == "scaler"
    ]
    spec = json.loads(template["inputs"]["metadata"]["gce-container-declaration"])
    env = {e["name"]: e["value"] for e in spec["spec"]["containers"][0]["env"]}
    assert env["GARO_GITHUB_SECRET"] == grants[0]["secretId"]
    assert "webhook" not in json.dumps(env).lower()


@pytest.mark.parametrize("stack", DEPARTMENTS)
def test_a_department_declares_no_hub_credential(captures: dict[str, Any], stack: str) -> None:
    declared = json.dumps(captures[stack]["resources"])
    for hub_secret in ("garo-webhook-secret", "garo-webhook-app-key", "garo-routes"):
        assert hub_secret not in declared
    secrets = {s["inputs"]["secretId"] for s in of_type(captures[stack], "secretmanager/secret:Secret")}
    assert secrets <= {f"garo-{stack}-runner-app-key"}


def test_the_hub_holds_no_runner_credential_and_grants_its_app_key_to_the_sweeper_alone(
    captures: dict[str, Any],
) -> None:
    hub = captures["hub"]
    secrets = {s["inputs"]["secretId"] for s in of_type(hub, "secretmanager/secret:Secret")}
    assert secrets == {"garo-webhook-secret", "garo-webhook-app-key", "garo-routes", "garo-webhook-run-monitoring"}
    grants = [b["inputs"] for b in of_type(hub, "SecretIamMember")]
    readers: dict[str, set[str]] = {}
    for g in grants:
        readers.setdefault(g["secretId"].rsplit("/", 1)[-1], set()).add(g["member"].split("@")[0])
    # The webhook service needs no App key; the scheduled redelivery sweeper needs nothing else.
    assert readers == {
        "garo-webhook-secret": {"serviceAccount:garo-webhook"},
        "garo-routes": {"serviceAccount:garo-webhook"},
        "garo-webhook-run-monitoring": {"serviceAccount:garo-webhook"},
        "garo-webhook-app-key": {"serviceAccount:garo-redeliver"},
    }
    assert hub["outputs"]["webhookAppKeySecret"] == "projects/acme-ci-hub/secrets/garo-webhook-app-key"
    assert "runner" not in json.dumps(hub["resources"]).lower()


def test_only_the_webhook_publishes_to_the_hub_topic(captures: dict[str, Any]) -> None:
    topic_grants = [b["inputs"] for b in of_type(captures["hub"], "TopicIAMMember")]
    assert [(g["topic"], g["role"], g["member"].split("@")[0]) for g in topic_grants] == [
        ("garo-workflow-jobs", "roles/pubsub.publisher", "serviceAccount:garo-webhook")
    ]
    for stack in DEPARTMENTS:
        for grant in of_type(captures[stack], "TopicIAMMember"):
            assert "garo-workflow-jobs" != grant["inputs"]["topic"].rsplit("/", 1)[-1], grant["name"]


@pytest.mark.parametrize("stack", DEPARTMENTS)
def test_dead_letters_stay_in_the_department(captures: dict[str, Any], stack: str) -> None:
    """The narrowest grants: this project's Pub/Sub service agent, on this department's own DLQ and subscription."""
    capture = captures[stack]
    [jobs] = [s["inputs"] for s in of_type(capture, "subscription:Subscription") if s["inputs"].get("filter")]
    dlq = f"projects/{project_of(stack)}/topics/garo-{stack}-jobs-dlq"
    assert jobs["deadLetterPolicy"]["deadLetterTopic"] == dlq
    pubsub_grants = [
        b["inputs"] for b in of_type(capture, "TopicIAMMember") + of_type(capture, "SubscriptionIAMMember")
    ]
    agent = [g for g in pubsub_grants if "@gcp-sa-pubsub." in g["member"]]
    assert sorted((g.get("topic") or g["subscription"], g["role"]) for g in agent) == [
        (f"garo-{stack}-jobs", "roles/pubsub.subscriber"),
        (f"garo-{stack}-jobs-dlq", "roles/pubsub.publisher"),
    ]
    assert all(g.get("project") == project_of(stack) for g in agent)
    # Nobody else is granted anything on the dead letters.
    others = [g for g in pubsub_grants if g not in agent]
    assert [(g.get("subscription"), g["role"]) for g in others] == [(f"garo-{stack}-jobs", "roles/pubsub.subscriber")]
    assert capture["outputs"]["portal"]["subscription"]["deadLetterTopic"] == dlq


def test_the_portal_names_each_app_by_id_only(captures: dict[str, Any]) -> None:
    github = {stack: captures[stack]["outputs"]["portal"]["github"] for stack in STACKS}
    assert github["hub"] == {"org": "acme", "webhookApp": {"appId": 100001, "installationId": 2000001}}
    assert github["payments"]["runnerApp"]["scope"] == "repository"
    assert github["research"]["runnerApp"]["scope"] == "organization"
    app_ids = [github[s]["runnerApp"]["appId"] for s in DEPARTMENTS] + [github["hub"]["webhookApp"]["appId"]]
    assert len(set(app_ids)) == len(app_ids), "every stack has its own App"


def test_a_declared_shared_app_shows_in_the_plan(tmp_path: Path) -> None:
    for stack in STACKS:
        document = yaml.safe_load((EXAMPLES / f"Pulumi.{stack}.yaml").read_text())
        if stack == "payments":
            document["config"]["garo:github"]["runnerApp"]["sharedWith"] = ["research"]
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    capture = run_captures([tmp_path / "Pulumi.payments.yaml"])["payments"]
    assert capture["outputs"]["portal"]["github"]["runnerApp"]["sharedWith"] == ["research"]
    assert '"sharedWith": ["research"]' in capture["table"]


def test_additional_runner_apps_keys_are_granted_to_the_scaler_alone(tmp_path: Path) -> None:
    for stack in STACKS:
        document = yaml.safe_load((EXAMPLES / f"Pulumi.{stack}.yaml").read_text())
        if stack == "payments":
            document["config"]["garo:github"]["runnerApp"]["additional"] = [
                {"appId": 100102, "installationId": 2000102, "privateKey": {"secretManager": "payments-app-2"}},
                {"appId": 100103, "privateKey": {"secretManager": "projects/acme-ci-payments/secrets/payments-app-3"}},
            ]
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    capture = run_captures([tmp_path / "Pulumi.payments.yaml"])["payments"]
    grants = {(g["inputs"]["secretId"], g["inputs"]["member"]) for g in of_type(capture, "SecretIamMember")}
    scaler = "serviceAccount:garo-payments-scaler@acme-ci-payments.iam.gserviceaccount.com"
    assert grants == {
        ("projects/acme-ci-payments/secrets/garo-payments-runner-app-key", scaler),
        ("projects/acme-ci-payments/secrets/payments-app-2", scaler),
        ("projects/acme-ci-payments/secrets/payments-app-3", scaler),
    }
