"""The Pulumi program under mocks: what the hub and each example department declare."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from scaler.config import load_stack_file
from scaler.config.routing import parse_routing_table
from tests.infra.conftest import EXAMPLES, of_type


def named(capture: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found = [r for r in of_type(capture, kind) if r["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, got {[r['name'] for r in of_type(capture, kind)]}"
    return found[0]["inputs"]


def roles_of(capture: dict[str, Any], member_suffix: str) -> set[str]:
    members = [r for r in capture["resources"] if r["custom"] and "IAM" in r["type"].split(":")[-1].upper()]
    return {r["inputs"]["role"] for r in members if str(r["inputs"].get("member", "")).startswith(member_suffix)}


def test_hub_topic_and_public_webhook(captures: dict[str, Any]) -> None:
    hub = captures["hub"]
    topics = {r["inputs"]["name"] for r in of_type(hub, "pubsub/topic:Topic")}
    assert topics == {"garo-workflow-jobs"}  # dead letters live in each department's own project
    assert of_type(hub, "pubsub/subscription:Subscription") == []
    service = named(hub, "cloudrunv2/service:Service", "hub-webhook")
    assert service["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert service["template"]["serviceAccount"].startswith("garo-webhook@")
    env = {e["name"]: e for e in service["template"]["containers"][0]["envs"]}
    assert env["GARO_WEBHOOK_SECRET"]["valueSource"]["secretKeyRef"]["secret"].endswith("/secrets/garo-webhook-secret")
    assert "value" not in env["GARO_WEBHOOK_SECRET"]
    assert env["GARO_BUS"]["value"] == "pubsub://acme-ci-hub/garo-workflow-jobs"
    # The webhook's identity: publish to its topic, read its secrets (and the metrics sidecar's
    # RunMonitoring file), write its metrics; nothing else.
    assert roles_of(hub, "serviceAccount:garo-webhook@") == {
        "roles/pubsub.publisher",
        "roles/secretmanager.secretAccessor",
        "roles/monitoring.metricWriter",
    }
    publisher = of_type(hub, "pubsub/topicIAMMember:TopicIAMMember")
    assert [p["inputs"]["topic"] for p in publisher] == ["garo-workflow-jobs"]
    assert hub["outputs"]["webhookUrl"].startswith("https://") and hub["outputs"]["webhookUrl"].endswith("/webhook")
    assert hub["outputs"]["topic"] == "projects/acme-ci-hub/topics/garo-workflow-jobs"


def test_hub_routing_table_is_assembled_from_the_department_stacks(captures: dict[str, Any]) -> None:
    routes = captures["hub"]["outputs"]["routes"]
    table = parse_routing_table(routes)  # the webhook's own parser accepts it
    assert {r.department for r in table.routes} == {"payments", "research"}
    payments = load_stack_file(EXAMPLES / "Pulumi.payments.yaml")
    by_group = {r.group: r for r in table.routes if r.department == "payments"}
    assert set(by_group) == {g.name for g in payments.groups}


def test_department_network_is_isolated(captures: dict[str, Any]) -> None:
    payments = captures["payments"]
    vpc = named(payments, "compute/network:Network", "payments-network-vpc")
    assert vpc["autoCreateSubnetworks"] is False
    subnet = named(payments, "compute/subnetwork:Subnetwork", "payments-network-subnet")
    assert subnet["ipCidrRange"] == "10.20.0.0/20" and subnet["privateIpGoogleAccess"] is True
    assert subnet["logConfig"]["flowSampling"] > 0
    nat = named(payments, "compute/routerNat:RouterNat", "payments-network-nat")
    assert nat["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    deny = named(payments, "compute/firewall:Firewall", "payments-network-deny-ingress")
    assert deny["denies"] == [{"protocol": "all"}] and deny["direction"] == "INGRESS"
    iap = named(payments, "compute/firewall:Firewall", "payments-network-iap-ssh")
    assert iap["sourceRanges"] == ["35.235.240.0/20"] and iap["allows"] == [{"ports": ["22"], "protocol": "tcp"}]
    # research leaves network.iapSsh off: no rule at all.
    assert sorted(f["name"] for f in of_type(captures["research"], "compute/firewall:Firewall")) == [
        "research-jit-from-runners",  # the JIT pull path: runners -> scaler, one port (tests/infra/test_policy.py)
        "research-jit-health-checks",
        "research-network-deny-ingress",
    ]


def test_runner_identity_has_only_logging_and_metrics(captures: dict[str, Any]) -> None:
    for dept in ("payments", "research"):
        runner = f"serviceAccount:garo-{dept}-runner@"
        assert roles_of(captures[dept], runner) == {"roles/logging.logWriter", "roles/monitoring.metricWriter"}


def test_runner_templates_and_migs_follow_the_groups(captures: dict[str, Any]) -> None:
    payments = captures["payments"]
    template = named(payments, "compute/instanceTemplate:InstanceTemplate", "payments-large-template")
    assert template["machineType"] == "n2-standard-16"
    assert template["disks"][0]["sourceImage"] == "projects/acme-ci-payments/global/images/family/garo-runner-x64"
    assert template["disks"][0]["diskSizeGb"] == 200
    assert template["labels"]["garo-group"] == "large" and template["labels"]["cost-center"] == "cc-1234"
    assert template["metadata"]["garo-labels"] == "self-hosted,linux,x64,payments-large"
    assert template["serviceAccount"]["email"].startswith("garo-payments-runner@")
    assert template["shieldedInstanceConfig"] == {
        "enableIntegrityMonitoring": True,
        "enableSecureBoot": True,
        "enableVtpm": True,
    }
    assert template["scheduling"]["provisioningModel"] == "STANDARD"
    large = named(payments, "compute/regionInstanceGroupManager:RegionInstanceGroupManager", "payments-large-mig")
    assert large["targetSuspendedSize"] == 2 and large["standbyPolicy"]["mode"] == "MANUAL"
    assert large["distributionPolicyZones"] == ["europe-west1-b", "europe-west1-c"]
    assert large["updatePolicy"]["type"] == "OPPORTUNISTIC"
    assert large["updatePolicy"]["instanceRedistributionType"] == "NONE"
    default = named(payments, "compute/regionInstanceGroupManager:RegionInstanceGroupManager", "payments-default-mig")
    assert "standbyPolicy" not in default and "targetSuspendedSize" not in default


def test_spot_groups_fall_back_to_an_on_demand_mig_only_when_asked(captures: dict[str, Any]) -> None:
    research = captures["research"]
    spot = named(research, "compute/instanceTemplate:InstanceTemplate", "research-spot-template")
    assert spot["scheduling"]["provisioningModel"] == "SPOT" and spot["scheduling"]["preemptible"] is True
    fallback = named(research, "compute/instanceTemplate:InstanceTemplate", "research-spot-od-template")
    assert fallback["scheduling"]["provisioningModel"] == "STANDARD"
    migs = {r["inputs"]["name"] for r in of_type(research, "RegionInstanceGroupManager")}
    assert migs == {"garo-research-spot", "garo-research-spot-od", "garo-research-arm", "garo-research--scaler"}
    portal = {g["name"]: g for g in research["outputs"]["portal"]["groups"]}
    assert portal["spot"]["fallbackMig"].endswith("/garo-research-spot-od") and portal["arm"]["fallbackMig"] is None


def test_subscription_topic_comes_from_the_hub(captures: dict[str, Any]) -> None:
    # payments: StackReference to the hub (whose project the sibling Pulumi.hub.yaml names).
    payments = named(captures["payments"], "subscription:Subscription", "payments-jobs-subscription")
    assert payments["topic"] == "projects/acme-ci-hub/topics/garo-workflow-jobs"
    # Dead letters stay in the department's own project, kept by its own subscription.
    assert payments["deadLetterPolicy"]["deadLetterTopic"] == "projects/acme-ci-payments/topics/garo-payments-jobs-dlq"
    dlq = named(captures["payments"], "subscription:Subscription", "payments-jobs-dlq-subscription")
    assert dlq["topic"] == "projects/acme-ci-payments/topics/garo-payments-jobs-dlq" and "filter" not in dlq
    # research: garo:hubTopic.
    research = named(captures["research"], "subscription:Subscription", "research-jobs-subscription")
    assert research["topic"] == "projects/acme-ci-hub/topics/garo-workflow-jobs"
    # The Pub/Sub service agent may forward to the dead-letter topic and ack what it forwarded.
    agent_roles = roles_of(captures["research"], "serviceAccount:service-")
    assert agent_roles == {"roles/pubsub.publisher", "roles/pubsub.subscriber"}


def test_scaler_is_scoped_to_its_department(captures: dict[str, Any]) -> None:
    payments = captures["payments"]
    scaler = "serviceAccount:garo-payments-scaler@"
    members = [r["inputs"] for r in of_type(payments, "IAMMember") if r["inputs"]["member"].startswith(scaler)]
    manage = [m for m in members if "garoScalerManage" in m["role"]]
    assert len(manage) == 1 and 'startsWith("garo-payments-")' in manage[0]["condition"]["expression"]
    assert (
        '!resource.name.extract("/instanceGroupManagers/{name}").startsWith("garo-payments--")'
        in (manage[0]["condition"]["expression"])
    )
    secret_grants = [r["inputs"] for r in of_type(payments, "SecretIamMember")]
    assert [(g["secretId"], g["member"].split("@")[0]) for g in secret_grants] == [
        ("projects/acme-ci-payments/secrets/garo-payments-runner-app-key", "serviceAccount:garo-payments-scaler")
    ]
    subscriber = [
        r["inputs"] for r in of_type(payments, "SubscriptionIAMMember") if r["inputs"]["member"].startswith(scaler)
    ]
    assert [s["subscription"] for s in subscriber] == ["garo-payments-jobs"]
    # research keeps its key in an existing Secret Manager secret: referenced, not created.
    research = captures["research"]
    assert of_type(research, "secretmanager/secret:Secret") == []
    assert [r["inputs"]["secretId"] for r in of_type(research, "SecretIamMember")] == [
        "projects/acme-ci-research/secrets/garo-research-runner-app-key"
    ]
    template = named(payments, "compute/instanceTemplate:InstanceTemplate", "payments-scaler-template")
    assert template["disks"][0]["sourceImage"] == "projects/cos-cloud/global/images/family/cos-stable"
    declaration = json.loads(template["metadata"]["gce-container-declaration"])
    container = declaration["spec"]["containers"][0]
    assert container["image"] == "europe-docker.pkg.dev/acme-ci-hub/garo/scaler:0.1.0"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GARO_SUBSCRIPTION"] == "projects/acme-ci-payments/subscriptions/garo-payments-jobs"
    assert json.loads(env["GARO_POOLS"])[1]["mig"] == "garo-payments-large"


def test_the_hub_refuses_a_routing_table_the_webhook_would_refuse() -> None:
    from infra.hub import routes_document

    payments = {"name": "payments", "org": "acme", "groups": [{"name": "a", "labels": ["self-hosted", "pay"]}]}
    clash = {"name": "billing", "org": "acme", "groups": [{"name": "b", "labels": ["self-hosted", "pay"]}]}
    assert json.loads(routes_document([payments], []))["departments"][0]["name"] == "payments"
    with pytest.raises(pulumi.RunError, match="routing table assembled by the hub"):
        routes_document([payments], [clash])
