"""Policies over EVERY resource the mocked program declares, for every example stack.

These are the promises of Garo's security design (docs/security.md) checked
on the real program's declarations, not on a hand-written list.
"""

from __future__ import annotations

import inspect
import json
from functools import cache
from typing import Any

import pulumi_gcp
import pytest

from tests.infra.conftest import SENTINEL_TOKENS, SENTINELS, STACKS, of_type

PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
BROAD_COMPUTE_ROLES = {"roles/compute.admin", "roles/compute.instanceAdmin", "roles/compute.instanceAdmin.v1"}
# Importing pulumi_gcp.compute by name warns about deprecated aliases; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
DEPARTMENT = {"hub": "hub", "payments": "payments", "research": "research"}


@cache
def labellable(type_token: str) -> bool:
    """Whether the provider resource takes `labels` (from the SDK itself, not a list we keep)."""
    module, cls = type_token.split(":")[1].split("/")[0], type_token.split(":")[2]
    resource = getattr(getattr(pulumi_gcp, module), cls)
    return "labels" in inspect.signature(resource._internal_init).parameters


def gcp_resources(capture: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in capture["resources"] if r["custom"] and r["type"].startswith("gcp:")]


@pytest.mark.parametrize("stack", STACKS)
def test_no_external_ip_on_any_vm(captures: dict[str, Any], stack: str) -> None:
    for template in of_type(captures[stack], "InstanceTemplate"):
        for nic in template["inputs"]["networkInterfaces"]:
            assert not nic.get("accessConfigs") and not nic.get("ipv6AccessConfigs"), template["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_no_firewall_allows_ingress_from_anywhere(captures: dict[str, Any], stack: str) -> None:
    for rule in of_type(captures[stack], "compute/firewall:Firewall"):
        inputs = rule["inputs"]
        if inputs.get("direction", "INGRESS") == "INGRESS" and inputs.get("allows"):
            assert not {"0.0.0.0/0", "::/0"} & set(inputs.get("sourceRanges", [])), rule["name"]
            # A source: address ranges, or service accounts (matched on the VPC by the VM's identity).
            assert inputs.get("sourceRanges") or inputs.get("sourceServiceAccounts"), (
                f"{rule['name']} allows ingress without a source"
            )
            assert inputs.get("targetServiceAccounts") or inputs["allows"] == [{"ports": ["22"], "protocol": "tcp"}], (
                f"{rule['name']} opens a port on every VM of the network"
            )


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_only_runner_vms_reach_the_scaler_and_only_on_the_jit_port(captures: dict[str, Any], stack: str) -> None:
    """The JIT pull path (docs/security.md): runners -> scaler on one port; nothing else into the scaler."""
    scaler = f"garo-{stack}-scaler@"
    into_scaler = [
        r["inputs"]
        for r in of_type(captures[stack], "compute/firewall:Firewall")
        if r["inputs"].get("allows") and any(scaler in a for a in r["inputs"].get("targetServiceAccounts", []))
    ]
    assert {json.dumps(r["allows"], sort_keys=True) for r in into_scaler} == {
        json.dumps([{"ports": ["8780"], "protocol": "tcp"}], sort_keys=True)
    }
    from_runners = [r for r in into_scaler if r.get("sourceServiceAccounts")]
    assert len(from_runners) == 1 and not from_runners[0].get("sourceRanges")
    assert [a.split("@")[0] for a in from_runners[0]["sourceServiceAccounts"]] == [f"garo-{stack}-runner"]
    health = [r for r in into_scaler if r.get("sourceRanges")]
    assert [sorted(r["sourceRanges"]) for r in health] == [["130.211.0.0/22", "35.191.0.0/16"]]
    # The runners' templates name the address the internal load balancer answers on, and the scaler serves it.
    rule = next(r["inputs"] for r in of_type(captures[stack], "ForwardingRule"))
    assert rule["loadBalancingScheme"] == "INTERNAL" and rule["ports"] == ["8780"]
    url = f"http://{rule['ipAddress']}:8780"
    templates = [t["inputs"] for t in of_type(captures[stack], "InstanceTemplate")]
    runners = [t for t in templates if t["labels"]["garo-group"] != "scaler"]
    assert runners and all(t["metadata"]["garo-agent-url"] == url for t in runners)
    [scaler_template] = [t for t in templates if t["labels"]["garo-group"] == "scaler"]
    spec = json.loads(scaler_template["metadata"]["gce-container-declaration"])
    env = {e["name"]: e["value"] for e in spec["spec"]["containers"][0]["env"]}
    assert env["GARO_JIT_URL"] == url and env["GARO_JIT_PORT"] == "8780"


@pytest.mark.parametrize("stack", STACKS)
def test_every_labellable_resource_carries_its_department(captures: dict[str, Any], stack: str) -> None:
    checked = 0
    for resource in gcp_resources(captures[stack]):
        if labellable(resource["type"]):
            checked += 1
            labels = resource["inputs"].get("labels") or {}
            assert labels.get("garo-department") == DEPARTMENT[stack], f"{resource['name']} labels {labels}"
    assert checked >= 4


@pytest.mark.parametrize("stack", STACKS)
def test_no_primitive_roles_and_no_project_wide_compute_admin(captures: dict[str, Any], stack: str) -> None:
    custom_roles = {r["inputs"]["roleId"]: r["inputs"] for r in of_type(captures[stack], "IAMCustomRole")}
    for binding in of_type(captures[stack], "IAMMember") + of_type(captures[stack], "IamMember"):
        role = binding["inputs"]["role"]
        assert role not in PRIMITIVE_ROLES, binding["name"]
        if binding["type"] == "gcp:projects/iAMMember:IAMMember":
            assert role not in BROAD_COMPUTE_ROLES, f"{binding['name']}: project-wide {role}"
            custom = custom_roles.get(role.split("/")[-1])
            mutating = [p for p in (custom or {}).get("permissions", []) if not p.endswith((".get", ".list"))]
            if mutating:
                assert binding["inputs"].get("condition", {}).get("expression"), (
                    f"{binding['name']}: {mutating} granted project-wide without a name condition"
                )
    for role in custom_roles.values():
        assert not [p for p in role["permissions"] if "*" in p or p.startswith(("resourcemanager.", "iam.roles"))]


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_runner_migs_leave_their_size_to_the_scaler(captures: dict[str, Any], stack: str) -> None:
    migs = of_type(captures[stack], "RegionInstanceGroupManager")
    runner_migs = [m for m in migs if not m["inputs"]["name"].endswith("--scaler")]
    assert runner_migs
    for mig in runner_migs:
        assert "targetSize" in mig["ignoreChanges"], mig["name"]
        assert mig["inputs"]["updatePolicy"]["type"] == "OPPORTUNISTIC"
        assert mig["inputs"]["updatePolicy"]["instanceRedistributionType"] == "NONE"


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_subscription_filter_matches_the_department(captures: dict[str, Any], stack: str) -> None:
    subscriptions = of_type(captures[stack], "pubsub/subscription:Subscription")
    jobs = [s for s in subscriptions if s["inputs"]["name"] == f"garo-{stack}-jobs"]
    assert jobs and all(s["inputs"]["name"] == f"garo-{stack}-jobs-dlq" for s in subscriptions if s not in jobs)
    for sub in jobs:
        assert sub["inputs"]["filter"] == f'attributes.department = "{stack}"'
        assert sub["inputs"]["deadLetterPolicy"]["maxDeliveryAttempts"] >= 5


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_reach_secret_manager_and_nowhere_else(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    for sentinel in SENTINEL_TOKENS:
        assert sentinel not in json.dumps(capture["raw_outputs"]), "secret in a stack output"
        assert sentinel not in capture["table"] and sentinel not in capture["json"], "secret in plan output"
        assert sentinel not in json.dumps(capture["resources"])
        # Everything but the Secret Manager version, unmasked: metadata, env, labels...
        elsewhere = [r for r in capture["raw_resources"] if not r["type"].endswith("SecretVersion")]
        assert sentinel not in json.dumps(elsewhere)
    versions = of_type(capture, "SecretVersion", raw=True)
    stored = json.dumps([v["inputs"].get("secretData") for v in versions])
    expected = {
        "hub": ["garo:github.webhookSecret", "garo:github.webhookApp.privateKey"],
        "payments": ["garo:github.runnerApp.privateKey"],
    }.get(stack, [])
    for path in expected:  # the value did arrive where it belongs (so the checks above can fail)
        assert SENTINELS[path] in stored
