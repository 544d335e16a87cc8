"""Policies over EVERY AWS resource the mocked program declares for the AWS example stacks.

The promises of docs/security.md (AWS section), checked on the real program's
declarations: no public IPs, IMDSv2, no ingress, no wildcard IAM, a scaler
confined to its department's tags, encrypted volumes, an agent-owned size.
"""

from __future__ import annotations

import base64
import inspect
import json
from functools import cache
from typing import Any

import google.auth.aws
import pulumi_aws
import pytest

from infra.aws import permissions
from tests.infra.conftest import AWS_STACKS, SENTINEL_TOKENS, SENTINELS, of_type
from tests.infra.iam_eval import Request, allowed

ACCOUNT = "111122223333"  # examples/Pulumi.mobile.yaml aws:allowedAccountIds
REGION = "eu-central-1"
WIDE_OPEN = {"0.0.0.0/0", "::/0"}


def aws_resources(capture: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in capture["resources"] if r["custom"] and r["type"].startswith("aws:")]


def walk(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) pair in nested inputs."""
    pairs = [(key, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            pairs += walk(v, k)
    elif isinstance(value, list):
        for v in value:
            pairs += walk(v, key)
    return pairs


def actions_of(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return actions if isinstance(actions, list) else [actions]


def policies(capture: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every IAM policy document any resource declares, by resource name and property."""
    found = {}
    for r in aws_resources(capture):
        for key in ("policy", "assumeRolePolicy"):
            if isinstance(r["inputs"].get(key), str):
                found[f"{r['name']}.{key}"] = json.loads(r["inputs"][key])
    return found


def scaler_policy(capture: dict[str, Any], stack: str) -> dict[str, Any]:
    [policy] = [r for r in of_type(capture, "iam/rolePolicy:RolePolicy") if r["name"] == f"{stack}-scaler-policy"]
    return dict(json.loads(policy["inputs"]["policy"]))


@cache
def taggable(type_token: str) -> bool:
    module, cls = type_token.split(":")[1].split("/")[0], type_token.split(":")[2]
    resource = getattr(getattr(pulumi_aws, module), cls)
    return "tags" in inspect.signature(resource._internal_init).parameters


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_no_public_ips(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    templates = of_type(capture, "ec2/launchTemplate:LaunchTemplate")
    assert len(templates) >= 2
    for template in templates:
        # Runner templates leave the subnet to RunInstances (no interface block); any interface has no public IP.
        nics = template["inputs"].get("networkInterfaces", [])
        assert all(nic["associatePublicIpAddress"] == "false" for nic in nics), template["name"]
        assert nics or template["inputs"]["vpcSecurityGroupIds"], template["name"]
    # No subnet gives an instance a public IP, and the NAT subnets are marked so the scaler may not use them.
    for subnet in of_type(capture, "ec2/subnet:Subnet"):
        assert subnet["inputs"]["mapPublicIpOnLaunch"] is False, subnet["name"]
        public = subnet["inputs"]["tags"].get(permissions.TIER_TAG_KEY) == permissions.PUBLIC_TIER
        assert public == ("-public-" in subnet["name"]), subnet["name"]
    for r in aws_resources(capture):
        for key, value in walk(r["inputs"]):
            assert not (key in ("associatePublicIpAddress", "mapPublicIpOnLaunch") and value in (True, "true")), r[
                "name"
            ]
    # Elastic IPs exist only for NAT gateways: never on an instance or a network interface.
    eips, nats = of_type(capture, "ec2/eip:Eip"), of_type(capture, "ec2/natGateway:NatGateway")
    assert len(eips) == len(nats) >= 2
    assert all(not {"instance", "networkInterface"} & set(e["inputs"]) for e in eips)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_imdsv2_required_with_hop_limit_one(captures: dict[str, Any], stack: str) -> None:
    for template in of_type(captures[stack], "ec2/launchTemplate:LaunchTemplate"):
        options = template["inputs"]["metadataOptions"]
        assert options["httpTokens"] == "required", template["name"]
        assert options["httpPutResponseHopLimit"] == 1, template["name"]
        assert options["httpEndpoint"] == "enabled"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_no_ingress_from_anywhere(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    groups = of_type(capture, "ec2/securityGroup:SecurityGroup") + of_type(
        capture, "ec2/defaultSecurityGroup:DefaultSecurityGroup"
    )
    # Runners, the emptied default, the scaler's and the JIT load balancer's: no inline ingress in any.
    assert len(groups) == 4
    for group in groups:
        assert group["inputs"].get("ingress", []) == [], group["name"]
    runners = capture["raw_outputs"]["portal"]["network"]["securityGroup"]
    rules = [
        r for r in aws_resources(capture) if "ingress" in r["type"].lower() or r["type"].endswith("SecurityGroupRule")
    ]
    assert rules, "the JIT endpoint admits runners through rules of its own"
    for r in rules:
        inputs = r["inputs"]
        if inputs.get("type", "ingress") != "ingress":
            continue
        # Ingress only ever names a security group as its source, never an address range...
        assert not {"cidrIpv4", "cidrIpv6", "cidrBlocks", "prefixListId"} & set(inputs), r["name"]
        assert inputs.get("referencedSecurityGroupId") or inputs.get("sourceSecurityGroupId"), r["name"]
        # ...and nothing is admitted into the runners' group.
        assert inputs["securityGroupId"] != runners, r["name"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_no_wildcard_action_on_wildcard_resource(captures: dict[str, Any], stack: str) -> None:
    documents = policies(captures[stack])
    assert len(documents) >= 7  # 3 roles' trust, 3 inline policies, the secret's policy
    for where, document in documents.items():
        for statement in document["Statement"]:
            actions = actions_of(statement)
            if statement["Effect"] == "Allow":
                assert not [a for a in actions if "*" in a], f"{where}: wildcard action {actions}"
            resources = statement.get("Resource", [])
            if statement["Effect"] == "Allow" and "*" in (resources if isinstance(resources, list) else [resources]):
                # Only calls AWS cannot scope to a resource (Describe*) may go on "*".
                assert all(a.split(":")[1].startswith("Describe") for a in actions), f"{where}: {actions} on *"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_scaler_acts_only_on_its_departments_tagged_resources(captures: dict[str, Any], stack: str) -> None:
    policy = scaler_policy(captures[stack], stack)
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}"
    asg = f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:0-1:autoScalingGroupName"

    def may(action: str, resource: str, **context: Any) -> bool:
        return allowed(policy, Request(action, resource, context))

    own = {f"aws:ResourceTag/{permissions.TAG_KEY}": stack}
    other = {f"aws:ResourceTag/{permissions.TAG_KEY}": "payments"}
    # Instances: launched only with the department's tag; terminated/tagged only when they carry it.
    assert may("ec2:RunInstances", f"{arn}:instance/*", **{f"aws:RequestTag/{permissions.TAG_KEY}": stack})
    assert not may("ec2:RunInstances", f"{arn}:instance/*", **{f"aws:RequestTag/{permissions.TAG_KEY}": "payments"})
    assert not may("ec2:RunInstances", f"{arn}:instance/*")
    assert may("ec2:RunInstances", f"{arn}:subnet/subnet-1", **own)
    public = {**own, f"aws:ResourceTag/{permissions.TIER_TAG_KEY}": permissions.PUBLIC_TIER}
    assert not may("ec2:RunInstances", f"{arn}:subnet/subnet-2", **public)
    assert may("ec2:RunInstances", f"{arn}:launch-template/lt-1", **own)
    assert not may("ec2:RunInstances", f"{arn}:launch-template/lt-1", **other)
    assert may("ec2:TerminateInstances", f"{arn}:instance/i-1", **own)
    assert not may("ec2:TerminateInstances", f"{arn}:instance/i-1", **other)
    assert not may("ec2:TerminateInstances", f"{arn}:instance/i-1")
    assert may("ec2:CreateTags", f"{arn}:instance/i-1", **own, **{"aws:TagKeys": ["garo-job"]})
    assert not may("ec2:CreateTags", f"{arn}:instance/i-1", **own, **{"aws:TagKeys": [permissions.TAG_KEY]})
    assert not may("ec2:CreateTags", f"{arn}:instance/i-1", **other, **{"aws:TagKeys": ["garo-job"]})
    # ...but never its own instance.
    scaler = {**own, f"aws:ResourceTag/{permissions.GROUP_TAG_KEY}": permissions.SCALER_GROUP}
    assert not may("ec2:TerminateInstances", f"{arn}:instance/i-2", **scaler)
    # Groups: its own runner ASGs (by name and tag), never another department's or its own scaler's.
    for action in permissions.GROUP_ACTIONS:
        assert may(action, f"{asg}/garo-{stack}-spot", **own)
        assert not may(action, f"{asg}/garo-{stack}-spot", **other)
        assert not may(action, f"{asg}/garo-payments-spot", **own)
        assert not may(action, f"{asg}/garo-{stack}--scaler", **own)
    # Roles: passes the runner role to EC2 only.
    runner_role = f"arn:aws:iam::{ACCOUNT}:role/garo-{stack}-runner"
    assert may("iam:PassRole", runner_role, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not may("iam:PassRole", runner_role, **{"iam:PassedToService": "lambda.amazonaws.com"})
    assert not may(
        "iam:PassRole",
        f"arn:aws:iam::{ACCOUNT}:role/garo-{stack}-scaler",
        **{"iam:PassedToService": "ec2.amazonaws.com"},
    )
    # JIT objects: written and deleted in its own bucket only.
    bucket = f"garo-{stack}-jit-{ACCOUNT}-{REGION}"
    assert may("s3:PutObject", f"arn:aws:s3:::{bucket}/jit/AROA1:i-1")
    assert not may("s3:PutObject", f"arn:aws:s3:::garo-payments-jit-{ACCOUNT}-{REGION}/jit/AROA1:i-1")
    assert not may("s3:GetObject", f"arn:aws:s3:::{bucket}/jit/AROA1:i-1")
    # Secrets: its own GitHub credential, no other secret.
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:garo/{stack}/github-"
    assert [s for s in policy["Statement"] if s.get("Sid") == "ReadOwnGitHubCredential"][0]["Resource"].startswith(
        secret
    )
    assert not may(
        "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:garo/payments/github-abcdef"
    )
    # Everything it is granted is in the one importable list a test ties to the backend.
    granted = {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in actions_of(s)}
    assert granted == permissions.SCALER_ACTIONS


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_runners_can_do_almost_nothing(captures: dict[str, Any], stack: str) -> None:
    [policy] = [
        r for r in of_type(captures[stack], "iam/rolePolicy:RolePolicy") if r["name"] == f"{stack}-runner-policy"
    ]
    document = json.loads(policy["inputs"]["policy"])
    assert {a for s in document["Statement"] for a in actions_of(s)} == permissions.RUNNER_ACTIONS
    me = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-me"
    # An instance profile's session has aws:userid "<role id>:<instance id>": the key of its own config.
    context = {"ec2:SourceInstanceARN": me, "aws:userid": "AROARUNNER:i-me"}
    objects = f"arn:aws:s3:::garo-{stack}-jit-{ACCOUNT}-{REGION}/jit/"
    for action in ("s3:GetObject", "s3:DeleteObject"):
        assert allowed(document, Request(action, f"{objects}AROARUNNER:i-me", context))
        assert not allowed(document, Request(action, f"{objects}AROARUNNER:i-you", context))
    assert not allowed(document, Request("s3:PutObject", f"{objects}AROARUNNER:i-me", context))
    assert allowed(document, Request("ec2:CreateTags", me, {**context, "aws:ARN": me, "aws:TagKeys": ["garo-state"]}))
    assert not allowed(
        document, Request("ec2:CreateTags", me, {**context, "aws:ARN": me, "aws:TagKeys": ["garo-department"]})
    )
    other = me.replace("i-me", "i-you")
    assert not allowed(
        document, Request("ec2:CreateTags", other, {**context, "aws:ARN": other, "aws:TagKeys": ["garo-state"]})
    )


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_volumes_are_encrypted(captures: dict[str, Any], stack: str) -> None:
    templates = of_type(captures[stack], "ec2/launchTemplate:LaunchTemplate")
    for template in templates:
        mappings = template["inputs"]["blockDeviceMappings"]
        assert mappings and all(m["ebs"]["encrypted"] == "true" for m in mappings), template["name"]
    assert of_type(captures[stack], "ebs/volume:Volume") == []


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_runner_asgs_leave_their_size_to_the_agent(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    asgs = of_type(capture, "autoscaling/group:Group")
    runners = [a for a in asgs if not a["inputs"]["name"].endswith("--scaler")]
    assert len(runners) >= 3
    for asg in runners:
        assert "desiredCapacity" in asg["ignoreChanges"], asg["name"]
        assert asg["inputs"]["minSize"] == 0 and asg["inputs"]["desiredCapacity"] == 0
        assert asg["inputs"]["protectFromScaleIn"] is True
        assert {"AZRebalance", "ReplaceUnhealthy"} <= set(asg["inputs"]["suspendedProcesses"])
    # No scaling policy, schedule or alarm-driven scaling of any kind: the agent alone changes capacity.
    scaling = [r for r in aws_resources(capture) if r["type"].split(":")[1].split("/")[0] in ("appautoscaling",)]
    scaling += [
        r for r in of_type(capture, "autoscaling/policy:Policy") + of_type(capture, "autoscaling/schedule:Schedule")
    ]
    assert scaling == []


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_warm_pool_never_on_a_mixed_or_spot_group(captures: dict[str, Any], stack: str) -> None:
    asgs = of_type(captures[stack], "autoscaling/group:Group")
    warm = [a for a in asgs if a["inputs"].get("warmPool")]
    assert warm, "the example has warm pools"
    for asg in warm:
        assert "mixedInstancesPolicy" not in asg["inputs"], asg["name"]
        assert asg["inputs"]["launchTemplate"]
    for template in of_type(captures[stack], "ec2/launchTemplate:LaunchTemplate"):
        assert "instanceMarketOptions" not in template["inputs"], template["name"]
    spot = [a for a in asgs if a["inputs"].get("mixedInstancesPolicy")]
    assert spot and all("warmPool" not in a["inputs"] for a in spot)


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_taggable_resource_carries_its_department(captures: dict[str, Any], stack: str) -> None:
    checked = 0
    for r in aws_resources(captures[stack]):
        if r["type"] == "aws:autoscaling/group:Group":
            tags = {t["key"]: t["value"] for t in r["inputs"]["tags"]}
        elif taggable(r["type"]):
            tags = r["inputs"].get("tags") or {}
        else:
            continue
        checked += 1
        assert tags.get(permissions.TAG_KEY) == stack, f"{r['name']} tags {tags}"
    assert checked >= 30


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_github_credential_reaches_secrets_manager_only_readable_by_the_scaler(
    captures: dict[str, Any], stack: str
) -> None:
    capture = captures[stack]
    for token in SENTINEL_TOKENS:
        assert token not in json.dumps(capture["raw_outputs"]) and token not in capture["table"] + capture["json"]
        elsewhere = [r for r in capture["raw_resources"] if not r["type"].endswith("SecretVersion")]
        assert token not in json.dumps(elsewhere)
    [version] = of_type(capture, "secretsmanager/secretVersion:SecretVersion", raw=True)
    assert version["inputs"]["secretString"] == SENTINELS["garo:github.runnerApp.privateKey"]
    [policy] = of_type(capture, "secretsmanager/secretPolicy:SecretPolicy")
    document = json.loads(policy["inputs"]["policy"])
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:garo/{stack}/github-abcdef"
    scaler = f"arn:aws:iam::{ACCOUNT}:role/garo-{stack}-scaler"
    # The resource policy only denies: anyone but the scaler's role is refused, whatever their IAM allows.
    for principal, refused in ((scaler, False), (f"arn:aws:iam::{ACCOUNT}:role/Admin", True)):
        request = Request("secretsmanager:GetSecretValue", secret, {"aws:PrincipalArn": principal})
        denied = any(s["Effect"] == "Deny" for s in document["Statement"]) and not allowed(
            {"Statement": [*document["Statement"], {"Effect": "Allow", "Action": "*", "Resource": "*"}]}, request
        )
        assert denied is refused, principal


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_network_has_private_subnets_in_several_zones_nat_and_flow_logs(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    private = [s for s in of_type(capture, "ec2/subnet:Subnet") if "-private-" in s["name"]]
    assert len({s["inputs"]["availabilityZone"] for s in private}) >= 2
    routes = [r for r in of_type(capture, "ec2/routeTable:RouteTable") if "-private-" in r["name"]]
    assert len(routes) == len(private)
    assert all(r["inputs"]["routes"][0]["natGatewayId"].startswith("nat-") for r in routes)
    [flow] = of_type(capture, "ec2/flowLog:FlowLog")
    assert flow["inputs"]["trafficType"] == "ALL" and flow["inputs"]["vpcId"].startswith("vpc-")
    # Every instance, runner or scaler, lands in a private subnet.
    private_ids = set(capture["raw_outputs"]["portal"]["network"]["subnets"])
    assert len(private_ids) == len(private)
    for asg in of_type(capture, "autoscaling/group:Group"):
        assert set(asg["inputs"]["vpcZoneIdentifiers"]) <= private_ids, asg["name"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_agent_reaches_pubsub_through_workload_identity_federation(captures: dict[str, Any], stack: str) -> None:
    capture = captures[stack]
    info = capture["raw_outputs"]["gcpCredentialConfig"]
    # Validates the source (aws1, URLs) offline.
    credentials = google.auth.aws.Credentials.from_info(info)  # type: ignore[no-untyped-call]
    assert isinstance(credentials, google.auth.aws.Credentials) and not credentials.valid
    # The audience google-auth will present is this department's pool provider, in the hub's project.
    [provider] = of_type(capture, "workloadIdentityPoolProvider:WorkloadIdentityPoolProvider")
    assert info["audience"].endswith(f"/workloadIdentityPools/garo-{stack}/providers/aws")
    assert "private_key" not in json.dumps(info) and "service_account_impersonation_url" not in info
    assert provider["inputs"]["aws"] == {"accountId": ACCOUNT}
    role = f"arn:aws:sts::{ACCOUNT}:assumed-role/garo-{stack}-scaler"
    assert provider["inputs"]["attributeCondition"] == f'attribute.aws_role == "{role}"'
    # One binding: subscriber on this department's subscription, for the scaler role alone.
    bindings = [
        b["inputs"] for b in of_type(capture, "SubscriptionIAMMember") if "principalSet" in b["inputs"]["member"]
    ]
    assert bindings == [
        {
            "member": f"principalSet://iam.googleapis.com/{info['audience'].removeprefix('//iam.googleapis.com/').rsplit('/providers/', 1)[0]}/attribute.aws_role/{role}",
            "project": "acme-ci-hub",
            "role": "roles/pubsub.subscriber",
            "subscription": f"garo-{stack}-jobs",
        }
    ]
    # The scaler instance gets exactly this file, and nothing secret in its user data.
    [template] = [
        t
        for t in of_type(capture, "ec2/launchTemplate:LaunchTemplate", raw=True)
        if t["name"].endswith("-scaler-template")
    ]
    script = base64.b64decode(template["inputs"]["userData"]).decode()
    assert json.dumps(info, sort_keys=True) in script
    assert "GOOGLE_APPLICATION_CREDENTIALS=/etc/garo/gcp-credentials.json" in script and "--network host" in script
    assert not [t for t in SENTINEL_TOKENS if t in script]


def test_scaler_is_granted_every_call_the_aws_backend_makes() -> None:
    """The backend documents each API action it calls; the scaler's role must hold them all."""
    from scaler.backends import aws as backend  # a plain import: this check must never be skipped

    assert backend.PERMISSIONS and set(backend.PERMISSIONS) <= permissions.SCALER_ACTIONS
