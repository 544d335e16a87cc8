"""A department's isolated AWS network: a VPC, private subnets in >= 2 AZs, NAT egress, no ingress.

The VPC's CIDR is cut in quarters: one private subnet per zone (runners and the
scaler live there; no subnet ever maps public IPs), and the last quarter holds
a small public subnet per zone whose only tenant is that zone's NAT gateway.
One NAT gateway per zone: a zone outage does not cut the other zones' runners
off GitHub. The runners' security group has no ingress rule at all; the VPC's
default security group is emptied so nothing can fall back on it. Flow logs of
all traffic go to a CloudWatch log group through a role only VPC Flow Logs can
assume, for this account.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.permissions import PUBLIC_TIER, TIER_TAG_KEY, assume_role_policy, flow_logs_policy

FLOW_LOG_RETENTION_DAYS = 30


def subnet_plan(cidr: str, zones: Sequence[str]) -> list[tuple[str, str, str]]:
    """(zone, private CIDR, public CIDR) per zone; the schema allows 2-3 zones and /22 or larger."""
    network = ipaddress.IPv4Network(cidr)
    quarters = list(network.subnets(prefixlen_diff=2))
    # NAT subnets need only a few addresses: /24 in a large VPC, /28 (the AWS minimum) in a /22.
    public = list(quarters[3].subnets(new_prefix=max(network.prefixlen + 6, 24)))
    return [(zone, str(quarters[i]), str(public[i])) for i, zone in enumerate(zones)]


@dataclass(frozen=True)
class AwsNetworkArgs:
    department: str
    region: str
    account: pulumi.Input[str]
    cidr: str
    zones: tuple[str, ...]
    tags: Mapping[str, str]


class AwsNetwork(pulumi.ComponentResource):
    """VPC, subnets, NAT gateways, route tables, a no-ingress security group and flow logs."""

    vpc: aws.ec2.Vpc
    private_subnets: dict[str, aws.ec2.Subnet]
    security_group: aws.ec2.SecurityGroup
    outputs: dict[str, Any]

    def __init__(self, name: str, args: AwsNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        dept = args.department

        def tags(label: str) -> dict[str, str]:
            return {**args.tags, "Name": label}

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=tags(f"garo-{dept}"),
            opts=child,
        )
        # Emptied: an instance launched without a security group gets no traffic at all.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags=tags(f"garo-{dept}-default"),
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags(f"garo-{dept}"), opts=child)
        public_routes = aws.ec2.RouteTable(
            f"{name}-public-routes",
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags=tags(f"garo-{dept}-public"),
            opts=child,
        )

        def subnet(
            tier: str, zone: str, cidr: str, routes: aws.ec2.RouteTable, labels: dict[str, str]
        ) -> aws.ec2.Subnet:
            """A subnet of one zone that routes through `routes`; no instance in it gets a public IP."""
            created = aws.ec2.Subnet(
                f"{name}-{tier}-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=f"{args.region}{zone}",
                map_public_ip_on_launch=False,
                tags=labels,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-{tier}-{zone}", subnet_id=created.id, route_table_id=routes.id, opts=child
            )
            return created

        self.private_subnets = {}
        for zone, private_cidr, public_cidr in subnet_plan(args.cidr, args.zones):
            # Only the NAT gateway lives in the public subnet, with its Elastic IP.
            public_tags = {**tags(f"garo-{dept}-nat-{zone}"), TIER_TAG_KEY: PUBLIC_TIER}
            public = subnet("public", zone, public_cidr, public_routes, public_tags)
            address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags(f"garo-{dept}-nat-{zone}"), opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                allocation_id=address.id,
                subnet_id=public.id,
                connectivity_type="public",
                tags=tags(f"garo-{dept}-{zone}"),
                opts=child,
            )
            routes = aws.ec2.RouteTable(
                f"{name}-private-routes-{zone}",
                vpc_id=self.vpc.id,
                routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}],
                tags=tags(f"garo-{dept}-{zone}"),
                opts=child,
            )
            self.private_subnets[zone] = subnet("private", zone, private_cidr, routes, tags(f"garo-{dept}-{zone}"))
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-runners",
            name=f"garo-{dept}-runners",
            description=f"Garo {dept}: no ingress; egress through NAT",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            revoke_rules_on_delete=True,
            tags=tags(f"garo-{dept}-runners"),
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/garo/{dept}/vpc-flow-logs",
            retention_in_days=FLOW_LOG_RETENTION_DAYS,
            tags=dict(args.tags),
            opts=child,
        )
        flow_role = aws.iam.Role(
            f"{name}-flow-logs-role",
            name=f"garo-{dept}-flow-logs",
            assume_role_policy=pulumi.Output.from_input(args.account).apply(
                lambda a: assume_role_policy("vpc-flow-logs.amazonaws.com", a)
            ),
            tags=dict(args.tags),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=flow_role.id,
            policy=log_group.arn.apply(flow_logs_policy),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=flow_role.arn,
            max_aggregation_interval=60,
            tags=dict(args.tags),
            opts=child,
        )
        self.outputs = {
            "vpc": self.vpc.id,
            "subnets": {zone: subnet.id for zone, subnet in self.private_subnets.items()},
            "securityGroup": self.security_group.id,
        }
        self.register_outputs(self.outputs)
