"""Every AWS permission Garo grants, in one importable place.

The scaler's role may act only on resources tagged ``garo-department=<dept>``
(``aws:ResourceTag``), and may create only resources that carry that tag
(``aws:RequestTag``). Actions AWS cannot scope to a resource (the EC2 and
Auto Scaling ``Describe*`` calls) are granted on ``*`` one by one, never as a
wildcard action. The runners' role may do almost nothing: read and delete its
own JIT config (an S3 object whose key is its own ``aws:userid``) and tag its
own instance's state, nothing else.

``SCALER_ACTIONS`` is what the agent's ``AwsBackend`` may call; a test ties it
to the calls the backend makes (scaler/backends/aws.py documents them). These
functions only build JSON documents from plain strings, so they are usable and
testable without Pulumi.
"""

from __future__ import annotations

import json
from typing import Any

TAG_KEY = "garo-department"
GROUP_TAG_KEY = "garo-group"
SCALER_GROUP = "scaler"  # the garo-group tag of the scaler's own instance
# Read-only calls AWS evaluates on "*" (no resource-level permissions exist for them).
UNSCOPED_READS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeWarmPool",
    "ec2:DescribeInstances",
)
# Calls on this department's Auto Scaling groups (tag-conditioned; never the scaler's own group).
GROUP_ACTIONS = (
    "autoscaling:AttachInstances",
    "autoscaling:DetachInstances",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
)
# JIT delivery (scaler/backends/aws.py): one S3 object per instance, jit/<runner role id>:<instance id>,
# in the department's JIT bucket; the runner may read and delete only its own key (its aws:userid).
JIT_PREFIX = "jit/"
JIT_WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject")
JIT_READ_ACTIONS = ("s3:GetObject", "s3:DeleteObject")
SCALER_ACTIONS = frozenset(
    {
        *UNSCOPED_READS,
        *GROUP_ACTIONS,
        *JIT_WRITE_ACTIONS,
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:DeleteTags",
        "ec2:TerminateInstances",
        "iam:PassRole",
        "secretsmanager:GetSecretValue",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
)
RUNNER_ACTIONS = frozenset({*JIT_READ_ACTIONS, "ec2:CreateTags"})
# Tags a runner may set on its own instance (what the boot agent reports).
RUNNER_TAG_KEYS = ("garo-state",)
# Subnets the scaler must never launch into (the NAT gateways' public subnets carry it).
TIER_TAG_KEY, PUBLIC_TIER = "garo-tier", "public"


def jit_bucket_name(department: str, account: str, region: str) -> str:
    """S3 names are global: the account and region keep the department's bucket unique (at most 63)."""
    return f"garo-{department}-jit-{account}-{region}"[:63]


def document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def assume_role_policy(service: str, account: str | None = None) -> str:
    """Trust a service principal; with ``account``, only on behalf of that account (confused-deputy guard).

    EC2 sends no ``aws:SourceAccount`` when it assumes an instance profile's role, so EC2 roles go without.
    """
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    return document([statement])


def scaler_policy(
    department: str,
    region: str,
    account: str,
    runner_role_arn: str,
    secret_arn: str,
    log_group_arn: str,
    jit_bucket: str,
) -> str:
    """The scaler's inline policy: its department's tagged resources, its secret, its logs."""
    ec2 = f"arn:aws:ec2:{region}:{account}"
    own_tag = {f"aws:ResourceTag/{TAG_KEY}": department}
    asg = f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/garo-{department}-*"
    own_asg = f"arn:aws:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/garo-{department}--*"
    objects = f"arn:aws:s3:::{jit_bucket}/{JIT_PREFIX}*"
    return document(
        [
            {"Sid": "DescribeIsUnscoped", "Effect": "Allow", "Action": list(UNSCOPED_READS), "Resource": "*"},
            {
                "Sid": "LaunchOnlyTaggedInstances",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:network-interface/*"],
                "Condition": {"StringEquals": {f"aws:RequestTag/{TAG_KEY}": department}},
            },
            {
                "Sid": "LaunchFromOwnTemplatesSubnetsAndGroups",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [f"{ec2}:launch-template/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*"],
                "Condition": {"StringEquals": own_tag},
            },
            {
                "Sid": "NeverIntoAPublicSubnet",
                "Effect": "Deny",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:subnet/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{TIER_TAG_KEY}": PUBLIC_TIER}},
            },
            {
                "Sid": "LaunchWithAnyImageOrSpotRequest",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [f"arn:aws:ec2:{region}::image/*", f"{ec2}:image/*", f"{ec2}:spot-instances-request/*"],
            },
            {
                "Sid": "TagOnLaunch",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": [f"{ec2}:instance/*", f"{ec2}:volume/*", f"{ec2}:network-interface/*"],
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            {
                "Sid": "TagOwnInstancesButNotTheirDepartment",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
                "Resource": f"{ec2}:instance/*",
                "Condition": {
                    "StringEquals": own_tag,
                    "ForAllValues:StringNotEquals": {"aws:TagKeys": [TAG_KEY]},
                },
            },
            {
                "Sid": "TerminateOwnInstances",
                "Effect": "Allow",
                "Action": "ec2:TerminateInstances",
                "Resource": f"{ec2}:instance/*",
                "Condition": {"StringEquals": own_tag},
            },
            {
                "Sid": "ManageOwnGroups",
                "Effect": "Allow",
                "Action": list(GROUP_ACTIONS),
                "Resource": asg,
                "Condition": {"StringEquals": own_tag},
            },
            {
                "Sid": "NeverItsOwnInstance",
                "Effect": "Deny",
                "Action": ["ec2:CreateTags", "ec2:DeleteTags", "ec2:TerminateInstances"],
                "Resource": f"{ec2}:instance/*",
                "Condition": {"StringEquals": {f"aws:ResourceTag/{GROUP_TAG_KEY}": SCALER_GROUP}},
            },
            {"Sid": "NeverItsOwnGroup", "Effect": "Deny", "Action": list(GROUP_ACTIONS), "Resource": own_asg},
            {
                "Sid": "PassOnlyTheRunnerRoleToEc2",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": runner_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {
                "Sid": "WriteOwnJitConfigs",
                "Effect": "Allow",
                "Action": list(JIT_WRITE_ACTIONS),
                "Resource": objects,
            },
            {
                "Sid": "ReadOwnGitHubCredential",
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": secret_arn,
            },
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group_arn}:*",
            },
        ]
    )


def runner_policy(region: str, account: str, jit_bucket: str) -> str:
    """A runner reads and deletes its own JIT object and reports its state on its own instance."""
    own_instance = {"StringEquals": {"aws:ARN": "${ec2:SourceInstanceARN}"}}
    return document(
        [
            {
                "Sid": "ReadAndDeleteOwnJitConfig",
                "Effect": "Allow",
                "Action": list(JIT_READ_ACTIONS),
                # aws:userid of an instance profile's session is "<role id>:<instance id>".
                "Resource": f"arn:aws:s3:::{jit_bucket}/{JIT_PREFIX}${{aws:userid}}",
            },
            {
                "Sid": "TagOwnInstanceState",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"arn:aws:ec2:{region}:{account}:instance/*",
                "Condition": {**own_instance, "ForAllValues:StringEquals": {"aws:TagKeys": list(RUNNER_TAG_KEYS)}},
            },
        ]
    )


def flow_logs_policy(log_group_arn: str) -> str:
    return document(
        [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                "Resource": [log_group_arn, f"{log_group_arn}:*"],
            }
        ]
    )


def jit_bucket_policy(jit_bucket: str) -> str:
    """TLS only on the JIT bucket (the configs are single-use credentials in transit)."""
    return document(
        [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{jit_bucket}", f"arn:aws:s3:::{jit_bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    )


def secret_policy(scaler_role_arn: str) -> str:
    """On the GitHub secret itself: nobody but the scaler's role reads its value, whatever IAM says elsewhere."""
    return document(
        [
            {
                "Sid": "OnlyTheScalerReadsTheValue",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": scaler_role_arn}},
            }
        ]
    )
