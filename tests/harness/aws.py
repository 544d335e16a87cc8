"""AWS stand-in: moto in server mode, spoken to over real HTTP by real boto3 clients.

`moto_server` (session) starts one ThreadedMotoServer on a free loopback port.
`aws_clients` (per test) resets moto's state through its reset API first, so
tests never see each other's instances, and returns a factory:
``aws_clients("ec2")`` gives a boto3 client pointed at the server with fake
credentials. Instance-type validation is switched on so moto rejects an
instance type AWS would reject (it is off by default in moto).

Known gaps of moto 5.2 (so do not rely on them): it accepts unknown AMI ids and
a RunInstances without ImageId, and answers 500 (botocore: ResponseParserError)
to SetDesiredCapacity on an unknown group and to
TerminateInstanceInAutoScalingGroup on an unknown instance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

REGION = "eu-west-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """Endpoint URL (http://127.0.0.1:PORT) of a moto server for the whole session."""
    from moto import settings
    from moto.server import ThreadedMotoServer

    # moto reads this at import time; the model checks the attribute per call.
    settings.EC2_ENABLE_INSTANCE_TYPE_VALIDATION = True
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    """Forget every resource moto holds (its documented reset API)."""
    requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()


@pytest.fixture
def aws_clients(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Factory of boto3 clients on a freshly reset moto: ``aws_clients("autoscaling")``.

    The environment gets fake credentials too, so code under test that builds
    its own clients (with ``endpoint_url=moto_server``) never finds real ones.
    """
    import boto3

    reset_moto(moto_server)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def make(service: str, region: str = REGION) -> Any:
        return boto3.client(service, region_name=region, endpoint_url=moto_server, **FAKE_CREDENTIALS)

    return make


# ---------------------------------------------------------------------------- what moto does not model
#
# moto 5.2 has no warm-pool instances ("Does not create/return any Instances"), no capacity errors,
# no ClientToken idempotency, no throttling, and launches MinCount instances where AWS launches up to
# MaxCount. ``AwsGaps`` adds exactly these on the client side,
# through botocore's own event hooks: botocore has already validated every request against the
# service model (the same ``validate_parameters`` over the operation's input shape, which the gaps
# call again explicitly), and every answer the gaps make up is validated against the operation's
# output shape. Everything else (instances, tags, ASG membership, S3) stays real moto state: the
# gaps only decide what AWS would decide (which warm instance leaves the pool, which pool is dry)
# and carry it out with moto's own API.


class AwsGaps:
    """The parts of EC2 and Auto Scaling moto does not model, for clients of one boto3 session."""

    def __init__(self, endpoint: str, region: str = REGION) -> None:
        import boto3

        self.region = region
        self._raw = boto3.Session(region_name=region, **FAKE_CREDENTIALS)
        self.ec2 = self._raw.client("ec2", endpoint_url=endpoint)
        self.autoscaling = self._raw.client("autoscaling", endpoint_url=endpoint)
        self.warm: dict[str, dict[str, str]] = {}  # asg -> instance id -> warm-pool lifecycle state
        self.dry: set[tuple[str, str, bool]] = set()  # (instance type or "*", AZ or "*", spot) refused
        self.room: dict[tuple[str, str, bool], int] = {}  # (type or "*", AZ or "*", spot) -> instances left
        self.tokens: dict[str, tuple[dict[str, Any], list[str]]] = {}  # ClientToken -> (request, instance ids)
        self.requests: list[tuple[str, dict[str, Any]]] = []  # every validated request the session made
        self._zones: dict[str, str] = {}

    def session(self) -> Any:
        """A boto3 session whose clients go through the gaps (validated, then moto)."""
        import boto3

        session = boto3.Session(region_name=self.region, **FAKE_CREDENTIALS)
        session.events.register("before-parameter-build", self._validate)
        session.events.register("before-call.ec2.RunInstances", self._run_instances)
        session.events.register("after-call.ec2.RunInstances", self._remember_token)
        session.events.register("before-call.auto-scaling.DescribeWarmPool", self._describe_warm_pool)
        session.events.register("before-call.auto-scaling.SetDesiredCapacity", self._set_desired_capacity)
        return session

    # -------------------------------------------------------------- test controls

    def seed_warm(self, asg: str, names: list[str], state: str = "Warmed:Stopped") -> list[str]:
        """Warm instances as the ASG would prepare them: launched from its template, then stopped."""
        group = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"][0]
        template = {k: v for k, v in group["LaunchTemplate"].items() if k in ("LaunchTemplateId", "Version")}
        subnet = group["VPCZoneIdentifier"].split(",")[0]
        ids = []
        for name in names:
            tags = [{"Key": "garo-asg", "Value": asg}] + ([{"Key": "Name", "Value": name}] if name else [])
            reply = self.ec2.run_instances(
                LaunchTemplate=template, SubnetId=subnet, MinCount=1, MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
            )  # fmt: skip
            ids.append(reply["Instances"][0]["InstanceId"])
        self.ec2.stop_instances(InstanceIds=ids)
        self.warm.setdefault(asg, {}).update({i: state for i in ids})
        return ids

    def exhaust(self, instance_type: str = "*", zone: str = "*", spot: bool | None = None) -> None:
        """No capacity for this instance type in this AZ (``*``: any) for spot, on-demand or both."""
        for market in (True, False) if spot is None else (spot,):
            self.dry.add((instance_type, zone, market))

    def limit(self, count: int, instance_type: str = "*", zone: str = "*", spot: bool | None = None) -> None:
        """Capacity for only ``count`` more instances of this type in this AZ (``*``: any), then none."""
        for market in (True, False) if spot is None else (spot,):
            self.room[(instance_type, zone, market)] = count

    # -------------------------------------------------------------- hooks

    def _validate(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        from botocore.validate import validate_parameters

        validate_parameters(params, model.input_shape)  # raises ParamValidationError: never accept anything
        self.requests.append((model.name, dict(params)))
        context["garo_params"] = dict(params)

    def _zone(self, subnet: str) -> str:
        if subnet not in self._zones:
            self._zones[subnet] = self.ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["AvailabilityZone"]
        return self._zones[subnet]

    def _run_instances(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        """ClientToken idempotency, capacity, and ``MaxCount``: AWS launches as many as it has room for.

        moto launches ``MinCount`` instances whatever ``MaxCount`` says; AWS launches up to
        ``MaxCount`` and at least ``MinCount`` or none (InsufficientInstanceCapacity). The gaps
        decide the count and have moto launch exactly that many, with the request otherwise as sent.
        """
        params = context["garo_params"]
        token = params.get("ClientToken")
        if token and token in self.tokens:
            earlier, instance_ids = self.tokens[token]
            if earlier != params:
                return _error_reply(model, 400, "IdempotentParameterMismatch", "token reused with other parameters")
            found = self.ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
            instances = sorted((i for r in found for i in r["Instances"]), key=lambda i: i["AmiLaunchIndex"])
            return _reply(model, {"Groups": [], "Instances": instances, "OwnerId": found[0]["OwnerId"],
                                  "ReservationId": found[0]["ReservationId"]})  # fmt: skip
        spot = params.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        zone = self._zone(params["SubnetId"]) if params.get("SubnetId") else "*"
        kind = params.get("InstanceType", "*")
        rules = ((kind, zone, spot), ("*", zone, spot), (kind, "*", spot), ("*", "*", spot))
        room = min([int(params["MaxCount"])] + [self.room[r] for r in rules if r in self.room])
        if any(rule in self.dry for rule in rules) or room < int(params["MinCount"]):
            code = "InsufficientInstanceCapacity"
            return _error_reply(model, 500, code, f"We currently do not have sufficient {kind} capacity in {zone}")
        for rule in (r for r in rules if r in self.room):
            self.room[rule] -= room
        if room == int(params["MinCount"]):
            return None  # moto launches it
        reply = self.ec2.run_instances(**{**params, "MinCount": room, "MaxCount": room})
        return _reply(model, {k: v for k, v in reply.items() if k != "ResponseMetadata"})

    def _remember_token(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        params = context.get("garo_params", {})
        if params.get("ClientToken") and parsed.get("Instances"):
            ids = [i["InstanceId"] for i in parsed["Instances"]]
            self.tokens.setdefault(params["ClientToken"], (params, ids))

    def _describe_warm_pool(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        asg = context["garo_params"]["AutoScalingGroupName"]
        group = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"]
        if not group:
            return _error_reply(model, 400, "ValidationError", f"AutoScalingGroup name not found - {asg}")
        warm = self.warm.get(asg, {})
        described = self.ec2.describe_instances(InstanceIds=list(warm))["Reservations"] if warm else []
        instances = [
            {
                "InstanceId": i["InstanceId"],
                "InstanceType": i["InstanceType"],
                "AvailabilityZone": i["Placement"]["AvailabilityZone"],
                "LifecycleState": warm[i["InstanceId"]],
                "HealthStatus": "Healthy",
                "ProtectedFromScaleIn": False,
            }
            for r in described
            for i in r["Instances"]
        ]
        config = group[0].get("WarmPoolConfiguration") or {"PoolState": "Stopped", "MinSize": 0}
        return _reply(model, {"WarmPoolConfiguration": config, "Instances": instances})

    def _set_desired_capacity(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        """The ASG fills a raised desired capacity from its warm pool first (started, then InService)."""
        params = context["garo_params"]
        asg = params["AutoScalingGroupName"]
        group = self.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])["AutoScalingGroups"][0]
        if params["DesiredCapacity"] > group["MaxSize"]:
            return _error_reply(model, 400, "ValidationError", "New SetDesiredCapacity value is above max value")
        extra = params["DesiredCapacity"] - len(group["Instances"])
        ready = [i for i, state in self.warm.get(asg, {}).items() if state in ("Warmed:Stopped", "Warmed:Hibernated")]
        moving = ready[: max(0, extra)]
        if moving:
            self.ec2.start_instances(InstanceIds=moving)
            self.autoscaling.attach_instances(AutoScalingGroupName=asg, InstanceIds=moving)
            for instance_id in moving:
                del self.warm[asg][instance_id]
        if extra > len(moving):
            self.autoscaling.set_desired_capacity(AutoScalingGroupName=asg, DesiredCapacity=params["DesiredCapacity"])
        return _reply(model, {})


def _reply(model: Any, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse
    from botocore.validate import validate_parameters

    if model.output_shape is not None:
        validate_parameters(body, model.output_shape)  # what we make up has AWS's shape
    return AWSResponse("", 200, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": 200}}


def _error_reply(model: Any, status: int, code: str, message: str) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse

    return AWSResponse("", status, {}, None), {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def make_asg(
    aws_clients: Callable[..., Any],
    name: str,
    *,
    max_size: int = 20,
    warm_pool: bool = False,
    mixed: bool = False,
    zones: tuple[str, ...] = ("a", "b"),
) -> dict[str, Any]:
    """A VPC with a subnet per AZ, a launch template and an empty ASG, as infra/ would declare them."""
    ec2, asg = aws_clients("ec2"), aws_clients("autoscaling")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
        for i, z in enumerate(zones)
    ]
    # A name filter: listing every image moto knows takes seconds.
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/*"]}])["Images"][0][
        "ImageId"
    ]
    template = ec2.create_launch_template(
        LaunchTemplateName=name,
        LaunchTemplateData={
            "ImageId": image,
            "InstanceType": "m6i.large",
            "MetadataOptions": {"HttpTokens": "required"},
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    spec = {"LaunchTemplateId": template, "Version": "$Default"}
    # A spot or several-type group holds its template inside a mixed-instances policy (infra/aws/runner_pool.py).
    shape: dict[str, Any] = (
        {"MixedInstancesPolicy": {"LaunchTemplate": {"LaunchTemplateSpecification": spec}}}
        if mixed
        else {"LaunchTemplate": spec}
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name, MinSize=0, MaxSize=max_size, DesiredCapacity=0,
        VPCZoneIdentifier=",".join(subnets), **shape,
    )  # fmt: skip
    if warm_pool:
        asg.put_warm_pool(AutoScalingGroupName=name, PoolState="Stopped", MinSize=0)
    return {"subnets": subnets, "template": template, "vpc": vpc}


def make_bucket(aws_clients: Callable[..., Any], name: str) -> None:
    aws_clients("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})


def garo_identity(instance: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The Garo name an EC2 instance (a DescribeInstances item) was launched for and its tags, as documented.

    Launched with others (docs/aws-backend.md): the name and facts in its ``garo-launch-<AmiLaunchIndex>``
    tag, under the tags written since; alone: its ``Name`` and its tags.
    """
    tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
    own = tags.get(f"garo-launch-{instance.get('AmiLaunchIndex', 0)}")
    if not own:
        return str(tags.get("Name", "")), tags
    name, *pairs = own.split(" ")
    facts = dict(pair.split("=", 1) for pair in pairs)
    return name, {**facts, **{k: v for k, v in tags.items() if not k.startswith("garo-launch-")}}


def garo_name(instance: dict[str, Any]) -> str:
    """The Garo name an EC2 instance was launched for (:func:`garo_identity`)."""
    return garo_identity(instance)[0]
