"""``garo demo --cloud aws``: the same story, with the agent's ``AwsBackend`` against a moto server.

moto (``moto[server]``, a dev dependency) serves EC2, Auto Scaling, S3 and IAM
over HTTP on loopback. The demo declares in it what ``infra/aws`` declares for
a department (a VPC with a private subnet per AZ, a security group with no
ingress, a runner role and instance profile, per group a launch template with
IMDSv2 required and an encrypted root volume, and an Auto Scaling group with
desired capacity 0; the JIT bucket, private and with the expire-unread rule),
and the agent drives it through the real ``AwsBackend``: ``RunInstances`` per
name, ``AttachInstances`` to the group's ASG, the JIT config as the S3 object
``jit/<runner role id>:<instance id>``, ``TerminateInstanceInAutoScalingGroup``.
The instances can be looked at with boto3 while the demo runs (the intro
prints the command).

What moto does not model and the demo leaves out: warm pools, capacity errors,
throttling (the tests cover them, docs/testing.md). The VMs' boot agents are
simulated here the way ``images/garo-runner`` behaves on EC2: read its own S3
object, report ``garo-state`` as an instance tag, delete the object.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import requests

from scaler.backends.aws import ASG_TAG, DEPARTMENT_TAG, AwsBackend, asg_name, jit_key
from scaler.backends.aws_launch import launch_identity
from scaler.backends.base import STATE_LABEL, Backend
from scaler.config import StackConfig, parse_stack_config
from scaler.demo.fleet import OnBoot
from scaler.demo.parts import DEMO_STACK, DEPARTMENT

REGION = "eu-west-1"
ZONES = ("a", "b")
BUCKET = f"garo-{DEPARTMENT}-jit-demo"
RUNNER_ROLE = f"garo-{DEPARTMENT}-runner"
INSTANCE_TYPES = {"linux": ["m6i.large", "m6a.large"], "gpu": ["g5.xlarge"]}
# moto accepts any credentials; these keep boto3 from ever looking for real ones.
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}
INSTALL_HINT = (
    "garo demo --cloud aws needs moto's server: pip install 'moto[server]~=5.1' "
    "(or, in a checkout, .venv/bin/pip install -e '.[dev]')"
)


class MotoMissing(RuntimeError):
    pass


def aws_demo_config() -> StackConfig:
    """The demo department on AWS: the local demo's groups with EC2 instance types."""
    stack = dict(DEMO_STACK)
    stack.update({"garo:cloud": "aws", "garo:region": REGION, "gcp:project": "garo-demo-hub"})
    stack["garo:groups"] = [
        {**group, "instanceTypes": INSTANCE_TYPES[group["name"]]} for group in DEMO_STACK["garo:groups"]
    ]
    return parse_stack_config(stack, "embedded demo stack (aws)")


def start_moto() -> tuple[Any, str]:
    """A moto server on a free loopback port, or :class:`MotoMissing` saying how to install it."""
    try:
        from moto import settings
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise MotoMissing(INSTALL_HINT) from None
    settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True  # refuse instance types AWS would refuse
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its state per process, not per server: start from an empty account (its reset API).
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
    return server, endpoint


class AwsFleet:
    """moto behind the real ``AwsBackend``; boot agents as on EC2 (S3 object, instance tags)."""

    boot_delay = 1.5

    def __init__(self) -> None:
        import boto3

        self.config = aws_demo_config()
        self.server, self.endpoint = start_moto()
        try:
            self.session = boto3.Session(region_name=REGION, **FAKE_CREDENTIALS)
            self.counted: Counter[str] = Counter()
            self.session.events.register("after-call", self._count)
            # moto launches MinCount instances; AWS launches up to MaxCount when it has room, which moto always has.
            self.session.events.register("before-parameter-build.ec2.RunInstances", _up_to_max_count)
            # The demo's own view (setup, boot agents, narration) is a separate session: not counted.
            own = boto3.Session(region_name=REGION, **FAKE_CREDENTIALS)
            self.ec2, self.autoscaling, self.s3, self.iam = (
                own.client(s, endpoint_url=self.endpoint) for s in ("ec2", "autoscaling", "s3", "iam")
            )
            self.role_id = self._declare()
            self.aws = AwsBackend.from_config(
                self.config,
                jit_bucket=BUCKET,
                runner_role_id=self.role_id,
                session=self.session,
                endpoint_url=self.endpoint,
                list_ttl=0,
            )
        except BaseException:
            self.server.stop()
            raise
        self.backend: Backend = self.aws
        self.running_since: dict[str, float] = {}  # instance id -> when first seen running
        self.objects: set[str] = set()

    def _count(self, model: Any, **_: Any) -> None:
        self.counted[model.name] += 1

    # ------------------------------------------------------------------ what infra/aws declares

    def _declare(self) -> str:
        """The department's network, runner role, launch templates, ASGs and JIT bucket; the runner role id."""
        vpc = self.ec2.create_vpc(CidrBlock=str(DEMO_STACK["garo:network"]["cidr"]))["Vpc"]["VpcId"]
        subnets = [
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")[
                "Subnet"
            ]["SubnetId"]
            for i, zone in enumerate(ZONES)
        ]
        group = self.ec2.create_security_group(
            GroupName=f"garo-{DEPARTMENT}-runners", Description="Garo runners: no ingress", VpcId=vpc
        )["GroupId"]
        trust = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
        role = self.iam.create_role(
            RoleName=RUNNER_ROLE, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]})
        )["Role"]
        self.iam.create_instance_profile(InstanceProfileName=RUNNER_ROLE)
        self.iam.add_role_to_instance_profile(InstanceProfileName=RUNNER_ROLE, RoleName=RUNNER_ROLE)
        image = self.ec2.describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/*"]}])["Images"][
            0
        ]["ImageId"]  # moto's stand-in for the Packer-built garo-runner AMI
        for runner_group in self.config.groups:
            name = asg_name(DEPARTMENT, runner_group.name)
            template = self.ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData={
                    "ImageId": image,
                    "InstanceType": runner_group.instance_types[0],
                    "IamInstanceProfile": {"Name": RUNNER_ROLE},
                    "MetadataOptions": {
                        "HttpTokens": "required",
                        "HttpPutResponseHopLimit": 1,
                        "InstanceMetadataTags": "enabled",
                    },
                    "BlockDeviceMappings": [
                        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 30, "VolumeType": "gp3", "Encrypted": True}}
                    ],
                    "NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": False, "Groups": [group]}],
                },
            )["LaunchTemplate"]["LaunchTemplateId"]
            self.autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=name,
                MinSize=0,
                MaxSize=runner_group.max,
                DesiredCapacity=0,
                VPCZoneIdentifier=",".join(subnets),
                LaunchTemplate={"LaunchTemplateId": template, "Version": "$Default"},
                Tags=[
                    {"Key": DEPARTMENT_TAG, "Value": DEPARTMENT, "PropagateAtLaunch": True},
                    {"Key": ASG_TAG, "Value": name, "PropagateAtLaunch": True},
                ],
            )
        self.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.s3.put_public_access_block(
            Bucket=BUCKET,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self.s3.put_bucket_lifecycle_configuration(
            Bucket=BUCKET,
            LifecycleConfiguration={
                "Rules": [
                    {
                        "ID": "expire-unread-jit-configs",
                        "Status": "Enabled",
                        "Filter": {"Prefix": "jit/"},
                        "Expiration": {"Days": 1},
                    }
                ]
            },
        )
        return str(role["RoleId"])

    # ------------------------------------------------------------------ Fleet

    def intro(self) -> list[str]:
        asgs = ", ".join(asg_name(DEPARTMENT, g.name) for g in self.config.groups)
        return [
            f"  AWS: moto server {self.endpoint} ({REGION}); ASGs {asgs}; JIT bucket s3://{BUCKET}, "
            f"runner role id {self.role_id}",
            "  look at the instances while it runs (moto takes any credentials):",
            f'    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing python -c "import boto3; '
            f"print(boto3.client('ec2', region_name='{REGION}', endpoint_url='{self.endpoint}')"
            f".describe_instances(Filters=[{{'Name': 'tag:{DEPARTMENT_TAG}', 'Values': ['{DEPARTMENT}']}}]))\"",
        ]

    def _instances(self) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{DEPARTMENT_TAG}", "Values": [DEPARTMENT]}]
        )
        found = []
        for page in pages:
            for reservation in page["Reservations"]:
                for item in reservation["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                    launched = launch_identity(tags, item.get("AmiLaunchIndex"))  # one of a batch: its own tag
                    name = launched[0] if launched else tags.get("Name", item["InstanceId"])
                    found.append({**item, "tags": tags, "name": name})
        return found

    def step(self, on_boot: OnBoot) -> list[str]:
        """Each running instance's boot agent: after its boot delay, read its own S3 object, start, delete it."""
        said: list[str] = []
        now = time.monotonic()
        for item in self._instances():
            iid, tags = item["InstanceId"], item["tags"]
            if item["State"]["Name"] != "running" or tags.get(STATE_LABEL) in ("running", "done", "failed"):
                continue
            first = self.running_since.setdefault(iid, now)
            if now - first < self.boot_delay:
                continue
            key = jit_key(iid, self.role_id)
            try:
                jit = self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            except self.s3.exceptions.NoSuchKey:
                if STATE_LABEL not in tags:
                    self.ec2.create_tags(Resources=[iid], Tags=[{"Key": STATE_LABEL, "Value": "waiting"}])
                continue
            if key not in self.objects:  # written since the bucket was last listed: say so before its reading
                said.append(self._written(key))
            self.ec2.create_tags(Resources=[iid], Tags=[{"Key": STATE_LABEL, "Value": "running"}])
            self.s3.delete_object(Bucket=BUCKET, Key=key)
            said.append(f"  {iid}: its boot agent read s3://{BUCKET}/{key} and deleted it")
            on_boot(item["name"], jit)
        said += self._watch_bucket()
        return said

    def _watch_bucket(self) -> list[str]:
        keys = {o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        said = [self._written(key) for key in sorted(keys - self.objects)]
        self.objects = keys
        return said

    @staticmethod
    def _written(key: str) -> str:
        return f"  S3 s3://{BUCKET}/{key}: JIT config written (its runner role session alone may read it)"

    def finish(self, group: str, name: str) -> None:
        for item in self._instances():
            if item["name"] == name and item["State"]["Name"] == "running":
                self.ec2.create_tags(Resources=[item["InstanceId"]], Tags=[{"Key": STATE_LABEL, "Value": "done"}])

    def states(self) -> dict[str, str]:
        lifecycle: dict[str, str] = {}
        asgs = [asg_name(DEPARTMENT, g.name) for g in self.config.groups]
        for group in self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=asgs)["AutoScalingGroups"]:
            for member in group["Instances"]:
                lifecycle[member["InstanceId"]] = f"{member['LifecycleState']} in ASG {group['AutoScalingGroupName']}"
        out: dict[str, str] = {}
        for item in self._instances():
            state, iid = item["State"]["Name"], item["InstanceId"]
            if state == "terminated":
                continue
            where = f"{iid}, {item['InstanceType']}, {item['Placement']['AvailabilityZone']}"
            out[item["name"]] = f"{state}, {lifecycle.get(iid, 'not in its ASG yet')} ({where})"
        return out

    def calls(self) -> Mapping[str, int]:
        return self.counted

    def outro(self) -> list[str]:
        """What AWS holds now, read back with boto3: the ASGs' sizes, the instances, the JIT objects."""
        asgs = [asg_name(DEPARTMENT, g.name) for g in self.config.groups]
        groups = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=asgs)["AutoScalingGroups"]
        sizes = ", ".join(
            f"{g['AutoScalingGroupName']} desired {g['DesiredCapacity']} members {len(g['Instances'])}" for g in groups
        )
        states = Counter(item["State"]["Name"] for item in self._instances())
        left = self.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        return [
            f"AWS (boto3):     {sizes}",
            f"EC2 instances:   {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}; "
            f"JIT objects left in s3://{BUCKET}: {left}",
        ]

    def close(self) -> None:
        self.server.stop()


def _up_to_max_count(params: dict[str, Any], **_: Any) -> None:
    params["MinCount"] = params.get("MaxCount", params.get("MinCount", 1))
