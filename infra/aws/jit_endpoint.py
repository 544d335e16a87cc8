"""Where an AWS department's runners pull their JIT configs: an internal Network Load Balancer to the agent.

The agent is the one instance of a single-instance ASG, so its IP changes each
time the ASG replaces it (a failed health check, a lost zone, a new launch
template). Runners reach it instead through an internal NLB whose DNS name
never changes: a listener on the JIT port, cross-zone, forwarding to a target
group the scaler's ASG registers its instance in, with an HTTP health check on
the agent's ``/healthz``. The NLB has subnets in every zone of the
department, like the scaler's ASG, so losing a zone loses neither. The
alternative, a fixed-IP network interface the instance attaches at boot, costs
nothing but ties the agent to one subnet, hence one zone, and needs
``ec2:AttachNetworkInterface`` in the scaler's role (docs/deploy-aws.md weighs
the two).

Security groups do the admitting, not addresses: the NLB's group takes the JIT
port from the runners' group only and sends only to the scaler's group; the
scaler's group takes the JIT port from the NLB's group only (which AWS honours
with client IP preservation on: the targets see the runners' addresses). The
runners' group keeps no ingress at all. Plain HTTP inside the VPC, as on GCP
(docs/security.md says why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from scaler.agent.jit_endpoint import DEFAULT_JIT_PORT

HEALTH_PATH = "/healthz"
#: Seconds an old agent instance keeps open connections after it leaves the target group (the default 300
#: would hold a replacement back for five minutes; a pull is one short request).
DEREGISTRATION_DELAY = 30


def jit_url(dns_name: str, port: int = DEFAULT_JIT_PORT) -> str:
    """The agent's URL as runners reach it: the boot agent's ``garo-agent-url`` and the agent's ``GARO_JIT_URL``."""
    return f"http://{dns_name}:{port}"


@dataclass(frozen=True)
class AwsJitEndpointArgs:
    department: str
    vpc: pulumi.Input[str]
    subnets: Sequence[pulumi.Input[str]]  # the department's private subnets, one per zone
    runner_security_group: pulumi.Input[str]
    tags: Mapping[str, str]
    port: int = DEFAULT_JIT_PORT


class AwsJitEndpoint(pulumi.ComponentResource):
    """The scaler's security group, the NLB's, the NLB, its listener and target group, and the four rules."""

    scaler_security_group: aws.ec2.SecurityGroup
    target_group: aws.lb.TargetGroup
    url: pulumi.Output[str]
    outputs: dict[str, Any]

    def __init__(self, name: str, args: AwsJitEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:JitEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        dept, port = args.department, args.port

        def group(suffix: str, description: str) -> aws.ec2.SecurityGroup:
            """A security group with no inline rules: the rules below are separate resources."""
            label = f"garo-{dept}-{suffix}"
            return aws.ec2.SecurityGroup(
                f"{name}-{suffix}",
                name=label,
                description=description,
                vpc_id=args.vpc,
                revoke_rules_on_delete=True,
                tags={**args.tags, "Name": label},
                opts=child,
            )

        self.scaler_security_group = group(
            "scaler", f"Garo {dept} scaler: the JIT port from the JIT load balancer only; egress through NAT"
        )
        balancer_group = group("jit-lb", f"Garo {dept} JIT load balancer: the JIT port from runners to the scaler")

        def rule(suffix: str, description: str, **kwargs: Any) -> None:
            """One TCP rule on the JIT port between two security groups (never an address range)."""
            kind = aws.vpc.SecurityGroupIngressRule if suffix.startswith("in-") else aws.vpc.SecurityGroupEgressRule
            kind(
                f"{name}-{suffix}",
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description=description,
                tags=dict(args.tags),
                opts=child,
                **kwargs,
            )

        rule(
            "in-runners-to-lb",
            "Runners pull their JIT configs",
            security_group_id=balancer_group.id,
            referenced_security_group_id=args.runner_security_group,
        )
        rule(
            "out-lb-to-scaler",
            "To the agent (requests and health checks)",
            security_group_id=balancer_group.id,
            referenced_security_group_id=self.scaler_security_group.id,
        )
        rule(
            "in-lb-to-scaler",
            "From the JIT load balancer only",
            security_group_id=self.scaler_security_group.id,
            referenced_security_group_id=balancer_group.id,
        )
        # The agent calls GitHub, AWS and Pub/Sub through the zone's NAT gateway.
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-out-scaler",
            security_group_id=self.scaler_security_group.id,
            ip_protocol="-1",
            cidr_ipv4="0.0.0.0/0",
            description="GitHub, AWS and Pub/Sub APIs through NAT",
            tags=dict(args.tags),
            opts=child,
        )
        balancer = aws.lb.LoadBalancer(
            f"{name}-lb",
            name=f"garo-{dept}-jit",
            internal=True,
            load_balancer_type="network",
            subnets=list(args.subnets),
            security_groups=[balancer_group.id],
            # One agent in one zone serves runners in every zone.
            enable_cross_zone_load_balancing=True,
            tags=dict(args.tags),
            opts=child,
        )
        health: aws.lb.TargetGroupHealthCheckArgsDict = {
            "protocol": "HTTP",
            "path": HEALTH_PATH,
            "port": "traffic-port",
            "matcher": "200",
            "interval": 10,
            "healthy_threshold": 2,
            "unhealthy_threshold": 2,
        }
        self.target_group = aws.lb.TargetGroup(
            f"{name}-targets",
            name=f"garo-{dept}-jit",
            port=port,
            protocol="TCP",
            target_type="instance",
            vpc_id=args.vpc,
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=health,
            tags=dict(args.tags),
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-listener",
            load_balancer_arn=balancer.arn,
            port=port,
            protocol="TCP",
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            tags=dict(args.tags),
            opts=child,
        )
        self.url = balancer.dns_name.apply(lambda dns: jit_url(dns, port))
        self.outputs = {
            "url": self.url,
            "loadBalancer": balancer.arn,
            "scalerSecurityGroup": self.scaler_security_group.id,
        }
        self.register_outputs(self.outputs)
