"""The AWS agent's own compute: one instance in a single-instance Auto Scaling group.

The simplest real option, and GCP's shape (a single-VM MIG running the
container on Container-Optimized OS): an ASG of exactly one Amazon Linux 2023
instance in a private subnet that runs the Garo container image with Docker.
The ASG replaces the instance when it fails a health check or its zone goes
away, and rolls it (instance refresh) when the launch template changes; the
agent is stateless, so replacing it loses nothing. Its one way in is the JIT
port, from the department's internal load balancer (infra/aws/jit_endpoint.py),
whose target group the ASG registers the instance in; the load balancer's
health check on ``/healthz`` is the ASG's too, so an agent that stops answering
is replaced. ECS on Fargate was the alternative: no OS to patch, but a
cluster, a service, a task definition and two more roles for one container,
and the same IAM (docs/deploy-aws.md).

The container uses the host's network so IMDSv2 works with a hop limit of 1,
like the runners. Its environment holds no secret: the GitHub credential is
read from Secrets Manager with the instance role, and Pub/Sub is reached with
the ``external_account`` credential configuration (no key in it). The region's
certificate for instance identity documents (public) is a file beside it.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.permissions import SCALER_GROUP, assume_role_policy, scaler_policy
from infra.aws.runner_pool import IMDS_OPTIONS, asg_tags

AMAZON_LINUX = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
INSTANCE_TYPE = "t3.small"
CREDENTIALS_PATH = "/etc/garo/gcp-credentials.json"
IDENTITY_CERT_PATH = "/etc/garo/aws-identity.pem"  # GARO_JIT_AWS_CERT_FILE
#: Seconds before the load balancer's health check counts: Docker's install and the image pull come first.
HEALTH_CHECK_GRACE = 300
LOG_RETENTION_DAYS = 30


def user_data(
    image: str,
    env: Mapping[str, str],
    credential_config: Mapping[str, Any],
    log_group: str,
    region: str,
    identity_cert: str,
) -> str:
    """cloud-init shell script: Docker, the credential and certificate files, the container (restarted always).

    ``identity_cert`` is one PEM block as ``garo validate`` normalised it, so no line of it ends the heredoc.
    """
    env_file = "".join(f"{k}={v}\n" for k, v in sorted(env.items()) if "\n" not in v)
    script = f"""#!/bin/bash
set -euo pipefail
dnf install -y docker
systemctl enable --now docker
install -d -m 0755 /etc/garo
cat > {CREDENTIALS_PATH} <<'GARO_EOF'
{json.dumps(credential_config, sort_keys=True)}
GARO_EOF
cat > {IDENTITY_CERT_PATH} <<'GARO_EOF'
{identity_cert.strip()}
GARO_EOF
cat > /etc/garo/agent.env <<'GARO_EOF'
{env_file}GARO_EOF
docker run -d --name garo-scaler --restart always --network host \\
  --env-file /etc/garo/agent.env -e GOOGLE_APPLICATION_CREDENTIALS={CREDENTIALS_PATH} \\
  -v {CREDENTIALS_PATH}:{CREDENTIALS_PATH}:ro -v {IDENTITY_CERT_PATH}:{IDENTITY_CERT_PATH}:ro \\
  --log-driver awslogs --log-opt awslogs-group={shlex.quote(log_group)} --log-opt awslogs-region={region} \\
  {shlex.quote(image)} agent
"""
    return base64.b64encode(script.encode()).decode()


@dataclass(frozen=True)
class AwsScalerArgs:
    department: str
    region: str
    account: pulumi.Input[str]
    image: str
    subnets: tuple[pulumi.Input[str], ...]
    security_group: pulumi.Input[str]  # the scaler's own (infra/aws/jit_endpoint.py), not the runners'
    target_group_arn: pulumi.Input[str]  # the JIT load balancer's
    identity_cert: str  # PEM, validated (garo:awsIdentityCert)
    runner_role_arn: pulumi.Input[str]
    github_secret_arn: pulumi.Input[str]
    jit_bucket: pulumi.Input[str]
    env: pulumi.Input[Mapping[str, str]]
    credential_config: pulumi.Input[Mapping[str, Any]]
    tags: Mapping[str, str]


class AwsScaler(pulumi.ComponentResource):
    """Role (least privilege), instance profile, log group, launch template, single-instance ASG."""

    role: aws.iam.Role
    asg: aws.autoscaling.Group
    outputs: dict[str, Any]

    @staticmethod
    def role_name(department: str) -> str:
        return f"garo-{department}-scaler"

    def __init__(self, name: str, args: AwsScalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:Scaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        dept = args.department
        tags = {**args.tags, "garo-group": SCALER_GROUP}
        self.role = aws.iam.Role(
            f"{name}-role",
            name=self.role_name(dept),
            description=f"Garo scaler of {dept}: only resources tagged garo-department={dept}",
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/garo/{dept}/scaler", retention_in_days=LOG_RETENTION_DAYS, tags=tags, opts=child
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            name=f"garo-{dept}-scaler",
            role=self.role.id,
            policy=pulumi.Output.all(
                args.account, args.runner_role_arn, args.github_secret_arn, log_group.arn, args.jit_bucket
            ).apply(lambda v: scaler_policy(dept, args.region, v[0], v[1], v[2], v[3], v[4])),
            opts=child,
        )
        profile = aws.iam.InstanceProfile(
            f"{name}-profile", name=self.role_name(dept), role=self.role.name, tags=tags, opts=child
        )
        template = aws.ec2.LaunchTemplate(
            f"{name}-template",
            name=f"garo-{dept}--scaler",
            description=f"Garo scaler of {dept}",
            image_id=AMAZON_LINUX,
            instance_type=INSTANCE_TYPE,
            update_default_version=True,
            metadata_options={**IMDS_OPTIONS, "instance_metadata_tags": "disabled"},
            block_device_mappings=[
                {
                    "device_name": "/dev/xvda",  # Amazon Linux 2023
                    "ebs": {
                        "volume_size": 20,
                        "volume_type": "gp3",
                        "encrypted": "true",
                        "delete_on_termination": "true",
                    },
                }
            ],
            network_interfaces=[
                {
                    "device_index": 0,
                    "associate_public_ip_address": "false",
                    "delete_on_termination": "true",
                    "security_groups": [args.security_group],
                }
            ],
            iam_instance_profile={"arn": profile.arn},
            user_data=pulumi.Output.all(args.env, args.credential_config, log_group.name).apply(
                lambda v: user_data(args.image, v[0], v[1], v[2], args.region, args.identity_cert)
            ),
            tag_specifications=[
                {"resource_type": "instance", "tags": {**tags, "Name": f"garo-{dept}--scaler"}},
                {"resource_type": "volume", "tags": tags},
                {"resource_type": "network-interface", "tags": tags},
            ],
            tags=tags,
            opts=child,
        )
        self.asg = aws.autoscaling.Group(
            f"{name}-asg",
            name=f"garo-{dept}--scaler",
            min_size=1,
            max_size=1,
            desired_capacity=1,
            vpc_zone_identifiers=list(args.subnets),
            launch_template={"id": template.id, "version": "$Latest"},
            target_group_arns=[args.target_group_arn],
            health_check_type="ELB",
            health_check_grace_period=HEALTH_CHECK_GRACE,
            # A new template (image, env) replaces the one instance; the agent is stateless.
            instance_refresh={"strategy": "Rolling", "preferences": {"min_healthy_percentage": 0}},
            wait_for_capacity_timeout="0",
            tags=asg_tags(tags),
            opts=child,
        )
        self.outputs = {"role": self.role.arn, "asg": self.asg.name, "logGroup": log_group.name}
        self.register_outputs(self.outputs)
