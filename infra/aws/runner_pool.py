"""One AWS runner group: a launch template and the Auto Scaling group(s) the agent fills.

Pulumi declares the shape; the agent owns the size. Each ASG is created with
``min_size`` 0 and ``desired_capacity`` 0, and Pulumi ignores the desired
capacity afterwards. There are no scaling policies, and the processes that
would let the ASG pick its own victims or launch on its own (AZRebalance,
ReplaceUnhealthy, scheduled and alarm actions) are suspended; new instances are
protected from scale-in. The agent terminates by instance id with the desired
capacity decremented in the same call.

The launch template requires IMDSv2 with a hop limit of 1 (a job's containers
cannot reach the instance role), encrypts the root volume and gives the network
interface no public IP. A group is either mixed (spot, or several instance types
in fallback order: a mixed-instances policy) or plain on-demand with one type,
which alone may carry a warm pool (the group's ``standbyPool``: AWS refuses a
warm pool on a mixed or spot group; ``garo validate`` explains). A spot group
with ``fallbackOnDemand`` gets a second, on-demand ASG (``<asg>-od``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.stack import name_for
from scaler.config import Ami, RunnerGroup

ROOT_DEVICE = "/dev/sda1"  # Ubuntu AMIs (images/aws.pkr.hcl)
SUSPENDED_PROCESSES = ("AZRebalance", "AlarmNotification", "ReplaceUnhealthy", "ScheduledActions")
WARM_POOL_STATE = {"stopped": "Stopped", "suspended": "Hibernated"}
IMDS_OPTIONS: aws.ec2.LaunchTemplateMetadataOptionsArgsDict = {
    "http_endpoint": "enabled",
    "http_tokens": "required",
    "http_put_response_hop_limit": 1,
    # The boot agent finds where to pull (garo-agent-url), or its JIT bucket (garo-jit-bucket), in its own
    # tags; no tag holds a secret.
    "instance_metadata_tags": "enabled",
}


def image_id(ami: Ami | None, family: str) -> pulumi.Input[str]:
    """An SSM parameter is resolved by EC2 at each launch; a name, now (newest available AMI of this account)."""
    if ami is not None and ami.ssm_parameter:
        return f"resolve:ssm:{ami.ssm_parameter}"
    prefix = (ami.name if ami is not None and ami.name else family).rstrip("*")
    return aws.ec2.get_ami_output(
        owners=["self"],
        most_recent=True,
        filters=[{"name": "name", "values": [f"{prefix}*"]}, {"name": "state", "values": ["available"]}],
    ).id


def image_source(ami: Ami | None, family: str) -> str:
    """How the portal shows where a group's image comes from."""
    if ami is not None and ami.ssm_parameter:
        return f"resolve:ssm:{ami.ssm_parameter}"
    return f"name:{(ami.name if ami is not None and ami.name else family).rstrip('*')}*"


def volume(size_gb: int) -> aws.ec2.LaunchTemplateBlockDeviceMappingArgsDict:
    return {
        "device_name": ROOT_DEVICE,
        "ebs": {
            "volume_size": size_gb,
            "volume_type": "gp3",
            "encrypted": "true",
            "delete_on_termination": "true",
        },
    }


def asg_tags(tags: Mapping[str, str]) -> list[aws.autoscaling.GroupTagArgsDict]:
    return [{"key": k, "value": v, "propagate_at_launch": True} for k, v in sorted(tags.items())]


@dataclass(frozen=True)
class AwsRunnerPoolArgs:
    department: str
    group: RunnerGroup
    subnets: Mapping[str, pulumi.Input[str]]  # zone letter -> private subnet id
    security_group: pulumi.Input[str]
    instance_profile: pulumi.Input[str]  # ARN
    jit_bucket: pulumi.Input[str]
    agent_url: pulumi.Input[str]  # the agent's JIT endpoint (infra/aws/jit_endpoint.py)
    tags: Mapping[str, str]


class AwsRunnerPool(pulumi.ComponentResource):
    """Launch template + ASG (and the on-demand fallback ASG) for one runner group."""

    template: aws.ec2.LaunchTemplate
    asg: aws.autoscaling.Group
    fallback_asg: aws.autoscaling.Group | None
    outputs: dict[str, Any]

    def __init__(self, name: str, args: AwsRunnerPoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:RunnerPool", name, None, opts)
        self._args = args
        group = args.group
        self.base = name_for(f"garo-{args.department}-{group.name}", 200)
        self.tags = {**args.tags, "garo-group": group.name}
        self.template = self._template(name)
        self.asg = self._asg(name, self.base, spot=group.spot, warm=True)
        self.fallback_asg = None
        if group.spot and group.fallback_on_demand:
            self.fallback_asg = self._asg(f"{name}-od", f"{self.base}-od", spot=False, warm=False)
        self.outputs = {
            "launchTemplate": self.template.id,
            "asg": self.asg.name,
            "fallbackAsg": self.fallback_asg.name if self.fallback_asg else None,
        }
        self.register_outputs(self.outputs)

    def _template(self, name: str) -> aws.ec2.LaunchTemplate:
        args, group = self._args, self._args.group
        instance_tags = {
            **self.tags,
            "garo-labels": ",".join(group.labels),
            "garo-time-to-start": str(group.time_to_start),
            "garo-time-to-live": str(group.time_to_live),
        }
        hibernate = group.standby_pool.size > 0 and group.standby_pool.mode == "suspended"
        return aws.ec2.LaunchTemplate(
            f"{name}-template",
            name=self.base,
            description=f"Garo runners of {args.department}/{group.name}",
            image_id=image_id(group.ami, group.image_family),
            instance_type=group.instance_types[0] if group.instance_types else group.machine_type,
            update_default_version=True,
            metadata_options=IMDS_OPTIONS,
            block_device_mappings=[volume(group.disk_gb)],
            # No network interface block: the agent's RunInstances names the subnet (AWS refuses both).
            # No public IP: every subnet of the VPC has map_public_ip_on_launch off, and the scaler may
            # not launch into the NAT gateways' public subnets. No ingress in the security group.
            vpc_security_group_ids=[args.security_group],
            iam_instance_profile={"arn": args.instance_profile},
            hibernation_options={"configured": True} if hibernate else None,
            tag_specifications=[
                {"resource_type": "instance", "tags": instance_tags},
                {"resource_type": "volume", "tags": self.tags},
                {"resource_type": "network-interface", "tags": self.tags},
            ],
            tags=self.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _asg(self, name: str, asg_name: str, spot: bool, warm: bool) -> aws.autoscaling.Group:
        args, group = self._args, self._args.group
        zones = list(group.zones) or list(args.subnets)
        template: aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgsDict = {
            "launch_template_id": self.template.id,
            "version": "$Latest",
        }
        mixed = spot or len(group.instance_types) > 1
        mixed_policy: aws.autoscaling.GroupMixedInstancesPolicyArgsDict | None = None
        if mixed:
            mixed_policy = {
                "launch_template": {
                    "launch_template_specification": template,
                    "overrides": [{"instance_type": t} for t in group.instance_types],
                },
                "instances_distribution": {
                    "on_demand_base_capacity": 0,
                    "on_demand_percentage_above_base_capacity": 0 if spot else 100,
                    # On-demand: the listed order is the fallback order.
                    "on_demand_allocation_strategy": "prioritized",
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
            }
        standby = group.standby_pool
        warm_pool: aws.autoscaling.GroupWarmPoolArgsDict | None = None
        if warm and standby.size and not mixed:  # the schema refuses a standbyPool on a mixed group
            warm_pool = {
                "pool_state": WARM_POOL_STATE[standby.mode],
                "min_size": standby.size,
                "max_group_prepared_capacity": standby.size,
                "instance_reuse_policy": {"reuse_on_scale_in": False},
            }
        return aws.autoscaling.Group(
            f"{name}-asg",
            name=asg_name,
            min_size=0,  # the group's `min` is the agent's: an ASG minimum would launch VMs without JIT configs
            max_size=group.max,
            # The agent owns the size; Pulumi sets it once (ignore_changes below).
            desired_capacity=0,
            vpc_zone_identifiers=[args.subnets[z] for z in zones],
            launch_template=None if mixed else {"id": self.template.id, "version": "$Latest"},
            mixed_instances_policy=mixed_policy,
            warm_pool=warm_pool,
            capacity_rebalance=False,
            health_check_type="EC2",
            protect_from_scale_in=True,
            suspended_processes=list(SUSPENDED_PROCESSES),
            wait_for_capacity_timeout="0",
            # garo-asg, garo-agent-url and garo-jit-bucket reach instances the ASG itself launches (the warm
            # pool's): with the agent's URL their boot agents pull, like those the agent launches.
            tags=pulumi.Output.all(args.jit_bucket, args.agent_url).apply(
                lambda v: asg_tags(
                    {
                        **self.tags,
                        "garo-market": "spot" if spot else "on-demand",
                        "garo-asg": asg_name,
                        "garo-jit-bucket": v[0],
                        "garo-agent-url": v[1],
                    }
                )
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desired_capacity"]),
        )

    def describe(self) -> pulumi.Output[dict[str, Any]]:
        """The agent's view of this group (GARO_POOLS): ``mig`` is the ASG name, for the shared reader."""
        g = self._args.group
        return pulumi.Output.all(
            self.asg.name,
            self.fallback_asg.name if self.fallback_asg else None,
            self.template.id,
            *[self._args.subnets[z] for z in (list(g.zones) or list(self._args.subnets))],
        ).apply(
            lambda v: {
                "name": g.name,
                "mig": v[0],
                "asg": v[0],
                "fallbackMig": v[1],
                "fallbackAsg": v[1],
                "launchTemplate": v[2],
                "subnets": list(v[3:]),
                "instanceTypes": list(g.instance_types),
                "spot": g.spot,
                "standby": WARM_POOL_STATE[g.standby_pool.mode] if g.standby_pool.size else None,
            }
        )
