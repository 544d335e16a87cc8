"""What AWS (and Google's workload identity pools) would answer, for ``garo plan`` and the policy tests.

:class:`infra.plan_mocks.PlannedCloud` asks here first: deterministic ids in
AWS's own formats (``vpc-...``, ``lt-...``), ARNs in this account and region,
and the caller identity. The account is the stack's ``aws:allowedAccountIds``
(the guard against deploying into the wrong account), else AWS's documentation
account.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi

DOC_ACCOUNT = "123456789012"
ID_PREFIX = {
    "ec2/vpc:Vpc": "vpc",
    "ec2/subnet:Subnet": "subnet",
    "ec2/securityGroup:SecurityGroup": "sg",
    "ec2/defaultSecurityGroup:DefaultSecurityGroup": "sg",
    "ec2/internetGateway:InternetGateway": "igw",
    "ec2/eip:Eip": "eipalloc",
    "ec2/natGateway:NatGateway": "nat",
    "ec2/routeTable:RouteTable": "rtb",
    "ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
    "ec2/flowLog:FlowLog": "fl",
    "ec2/launchTemplate:LaunchTemplate": "lt",
    "vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
    "vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
}


def _hex(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def account() -> str:
    allowed = pulumi.Config("aws").get_object("allowedAccountIds")
    return str(allowed[0]) if isinstance(allowed, list) and allowed else DOC_ACCOUNT


def project_number(project: str) -> str:
    """The same number ``gcp:organizations/getProject`` answers with in the mocks."""
    return str(int(_hex(project, length=10), 16) % 10**12).rjust(12, "1")


def call(token: str, args: dict[str, Any]) -> dict[str, Any] | None:
    acct = account()
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {"accountId": acct, "arn": f"arn:aws:iam::{acct}:user/deployer", "userId": "AIDAPLAN", "id": acct}
    if token == "aws:ec2/getAmi:getAmi":
        names = [v for f in args.get("filters", []) if f.get("name") == "name" for v in f.get("values", [])]
        return {"id": f"ami-{_hex(*names)}", "name": (names or ["ami"])[0].rstrip("*") + "20250101-120000"}
    return None


def new_resource(
    typ: str, name: str, inputs: dict[str, Any], region: str, project: str
) -> tuple[str, dict[str, Any]] | None:
    """(id, state) for AWS resources and workload identity pools; None for anything else."""
    acct = account()
    state = dict(inputs)
    if typ == "gcp:iam/workloadIdentityPool:WorkloadIdentityPool":
        path = f"projects/{project_number(project)}/locations/global/workloadIdentityPools/{inputs['workloadIdentityPoolId']}"
        state.update(name=path, state="ACTIVE")
        return path, state
    if typ == "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        pool = f"projects/{project_number(project)}/locations/global/workloadIdentityPools/{inputs['workloadIdentityPoolId']}"
        path = f"{pool}/providers/{inputs['workloadIdentityPoolProviderId']}"
        state.update(name=path, state="ACTIVE")
        return path, state
    if not typ.startswith("aws:"):
        return None
    kind = typ.split(":", 1)[1]
    label = str(inputs.get("name") or name)
    if kind in ID_PREFIX:
        rid = f"{ID_PREFIX[kind]}-{_hex(typ, name)}"
        state["arn"] = f"arn:aws:ec2:{region}:{acct}:{kind.split('/')[1].split(':')[0].lower()}/{rid}"
        if kind == "ec2/launchTemplate:LaunchTemplate":
            state.update(arn=f"arn:aws:ec2:{region}:{acct}:launch-template/{rid}", latestVersion=1, defaultVersion=1)
        return rid, state
    arns = {
        "iam/role:Role": f"arn:aws:iam::{acct}:role/{label}",
        "iam/instanceProfile:InstanceProfile": f"arn:aws:iam::{acct}:instance-profile/{label}",
        "cloudwatch/logGroup:LogGroup": f"arn:aws:logs:{region}:{acct}:log-group:{label}",
        "secretsmanager/secret:Secret": f"arn:aws:secretsmanager:{region}:{acct}:secret:{label}-{_hex(label, length=6)}",
        "autoscaling/group:Group": (
            f"arn:aws:autoscaling:{region}:{acct}:autoScalingGroup:{_hex(label, length=8)}-0000-0000-0000-"
            f"{_hex(label, length=12)}:autoScalingGroupName/{label}"
        ),
    }
    if kind in arns:
        state["arn"] = arns[kind]
        rid = arns[kind] if kind == "secretsmanager/secret:Secret" else label
        if kind == "iam/role:Role":
            state["uniqueId"] = f"AROA{_hex(label, length=17).upper()}"
        return rid, state
    if kind in ("lb/loadBalancer:LoadBalancer", "lb/targetGroup:TargetGroup"):
        what = "loadbalancer/net" if kind == "lb/loadBalancer:LoadBalancer" else "targetgroup"
        arn = f"arn:aws:elasticloadbalancing:{region}:{acct}:{what}/{label}/{_hex(typ, name, length=16)}"
        state["arn"] = arn
        if kind == "lb/loadBalancer:LoadBalancer":
            # Internal or not, an NLB's DNS name is <name>-<id>.elb.<region>.amazonaws.com.
            state["dnsName"] = f"{label}-{_hex(typ, name, length=16)}.elb.{region}.amazonaws.com"
        return arn, state
    if kind == "s3/bucket:Bucket":
        state.update(arn=f"arn:aws:s3:::{inputs['bucket']}", bucketDomainName=f"{inputs['bucket']}.s3.amazonaws.com")
        return str(inputs["bucket"]), state
    if kind == "iam/rolePolicy:RolePolicy":
        return f"{inputs.get('role')}:{label}", state
    return f"{name}-{_hex(typ, name, length=8)}", state
