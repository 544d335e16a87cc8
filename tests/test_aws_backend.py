"""AwsBackend beyond the shared contract: fallback, idempotency, throttling, partial failures, JIT objects.

Everything runs on moto over HTTP; what moto does not model (capacity errors,
ClientToken idempotency, warm pools) goes through ``AwsGaps``, which checks
each request against botocore's service model (tests/harness/aws.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.retries.standard import ExponentialBackoff

from scaler.backends.aws import AwsBackend, AwsGroup, client_token, default_config, failure_for, jit_key
from scaler.backends.base import JIT_KEY, BackendError, Failure, InstanceState
from tests.harness.aws import REGION, AwsGaps, garo_name, make_asg, make_bucket

ASG, BUCKET, ROLE = "garo-eng-linux", "garo-eng-jit", "AROAEXAMPLERUNNER"
TYPES = ("m6i.large", "m6a.large")


class Rig:
    def __init__(self, endpoint: str, aws_clients: Callable[..., Any], *, spot: bool = False) -> None:
        self.endpoint, self.clients = endpoint, aws_clients
        self.net = make_asg(aws_clients, ASG, warm_pool=True, max_size=5)
        make_bucket(aws_clients, BUCKET)
        self.gaps = AwsGaps(endpoint)
        self.ec2, self.asg, self.s3 = aws_clients("ec2"), aws_clients("autoscaling"), aws_clients("s3")
        self.spot = spot

    def backend(self, *, list_ttl: float = 0, config: Any = None, session: Any = None) -> AwsBackend:
        return AwsBackend(
            "eng",
            REGION,
            {"linux": AwsGroup(ASG, TYPES, spot=self.spot)},
            jit_bucket=BUCKET,
            runner_role_id=ROLE,
            session=session or self.gaps.session(),
            endpoint_url=self.endpoint,
            config=config,
            list_ttl=list_ttl,
            resume_poll=0,
        )

    def instances(self, name: str | None = None) -> list[dict[str, Any]]:
        filters = [{"Name": "tag:garo-asg", "Values": [ASG]}]
        found = [i for r in self.ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
        return [i for i in found if name is None or garo_name(i) == name]

    def live(self, name: str | None = None) -> list[dict[str, Any]]:
        return [i for i in self.instances(name) if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def runs(self) -> list[dict[str, Any]]:
        return [params for op, params in self.gaps.requests if op == "RunInstances"]

    def desired(self) -> int:
        group = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
        return int(group["DesiredCapacity"])


@pytest.fixture
def rig(moto_server: str, aws_clients: Callable[..., Any]) -> Rig:
    return Rig(moto_server, aws_clients)


def test_a_group_with_a_mixed_instances_policy_launches_from_its_template(
    moto_server: str, aws_clients: Callable[..., Any]
) -> None:
    """Spot and several-type groups keep their launch template inside the mixed-instances policy."""
    net = make_asg(aws_clients, "garo-eng-spot", mixed=True)
    make_bucket(aws_clients, BUCKET)
    gaps = AwsGaps(moto_server)
    backend = AwsBackend(
        "eng",
        REGION,
        {"spot": AwsGroup("garo-eng-spot", TYPES, spot=True)},
        jit_bucket=BUCKET,
        runner_role_id=ROLE,
        session=gaps.session(),
        endpoint_url=moto_server,
        list_ttl=0,
        resume_poll=0,
    )
    result = backend.create("spot", ["garo-eng-spot-7"], {})
    assert result.created == ("garo-eng-spot-7",) and not result.failed
    runs = [params for op, params in gaps.requests if op == "RunInstances"]
    assert runs[0]["LaunchTemplate"]["LaunchTemplateId"] == net["template"]


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """botocore still computes each backoff (recorded here); the test just does not wait it out."""
    delays: list[float] = []
    real = ExponentialBackoff.delay_amount

    def record(self: ExponentialBackoff, context: Any) -> float:
        delays.append(real(self, context))
        return 0.0

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", record)
    yield delays


# ---------------------------------------------------------------- capacity fallback


def test_a_dry_az_moves_the_instance_to_the_next_subnet(rig: Rig) -> None:
    rig.gaps.exhaust("m6i.large", f"{REGION}a")
    result = rig.backend().create("linux", ["garo-eng-linux-1"], {})
    assert result.created == ("garo-eng-linux-1",) and result.failed == {}
    [instance] = rig.live("garo-eng-linux-1")
    assert instance["Placement"]["AvailabilityZone"] == f"{REGION}b"
    assert instance["InstanceType"] == "m6i.large"


def test_a_type_dry_everywhere_falls_back_to_the_next_type_and_is_not_asked_again(rig: Rig) -> None:
    rig.gaps.exhaust("m6i.large")
    result = rig.backend().create("linux", ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    assert sorted(result.created) == ["garo-eng-linux-1", "garo-eng-linux-2"]
    assert {i["InstanceType"] for i in rig.live()} == {"m6a.large"}
    tried = [(r["InstanceType"], r["SubnetId"]) for r in rig.runs()]
    # The first name tried m6i.large in both AZs; the second went straight to m6a.large.
    assert tried.count(("m6i.large", rig.net["subnets"][0])) == 1
    assert tried.count(("m6i.large", rig.net["subnets"][1])) == 1


def test_spot_without_capacity_falls_back_to_on_demand(moto_server: str, aws_clients: Callable[..., Any]) -> None:
    rig = Rig(moto_server, aws_clients, spot=True)
    rig.gaps.exhaust(spot=True)
    result = rig.backend().create("linux", ["garo-eng-linux-1"], {})
    assert result.created == ("garo-eng-linux-1",)
    markets = [r.get("InstanceMarketOptions", {}).get("MarketType", "on-demand") for r in rig.runs()]
    assert markets[0] == "spot" and markets[-1] == "on-demand"
    [instance] = rig.live("garo-eng-linux-1")
    assert instance.get("InstanceLifecycle") != "spot"


def test_partial_batch_failure_reports_only_the_refused_names(rig: Rig) -> None:
    backend = rig.backend()
    backend.create("linux", ["garo-eng-linux-1"], {})
    rig.gaps.exhaust()  # the pool runs dry mid-burst
    result = backend.create("linux", ["garo-eng-linux-1", "garo-eng-linux-2", "garo-eng-linux-3"], {})
    assert result.created == ("garo-eng-linux-1",)
    assert set(result.failed) == {"garo-eng-linux-2", "garo-eng-linux-3"}
    assert {f.reason for f in result.failed.values()} == {Failure.CAPACITY}
    assert [i["Tags"] for i in rig.live()] and len(rig.live()) == 1


# ---------------------------------------------------------------- idempotency


def test_two_replicas_with_stale_listings_launch_one_instance(rig: Rig) -> None:
    a, b = rig.backend(list_ttl=600), rig.backend(list_ttl=600)
    assert a.list("linux") == [] and b.list("linux") == []  # both now hold an empty cached view
    a.create("linux", ["garo-eng-linux-7"], {"garo-eng-linux-7": {"garo-job": "7"}})
    again = b.create("linux", ["garo-eng-linux-7"], {"garo-eng-linux-7": {"garo-job": "7"}})
    assert again.created == ("garo-eng-linux-7",)
    assert len(rig.runs()) == 2 and rig.runs()[0]["ClientToken"] == rig.runs()[1]["ClientToken"]
    assert len(rig.instances("garo-eng-linux-7")) == 1


def test_a_name_created_again_after_deletion_gets_a_new_instance(rig: Rig) -> None:
    backend = rig.backend()
    backend.create("linux", ["garo-eng-linux-w-0"], {})
    backend.list("linux")
    backend.delete("linux", ["garo-eng-linux-w-0"])
    again = backend.create("linux", ["garo-eng-linux-w-0"], {})
    assert again.created == ("garo-eng-linux-w-0",)
    states = sorted(i["State"]["Name"] for i in rig.instances("garo-eng-linux-w-0"))
    assert len(states) == 2 and states.count("terminated") == 1


def test_client_tokens_are_per_name_and_placement() -> None:
    from scaler.backends.aws import Placement

    here = Placement(False, "m6i.large", "subnet-1", ASG)
    assert client_token("garo-a", here) == client_token("garo-a", here)
    assert client_token("garo-a", here) != client_token("garo-b", here)
    assert client_token("garo-a", here) != client_token("garo-a", Placement(False, "m6i.large", "subnet-2", ASG))
    assert len(client_token("garo-a", here)) <= 64


# ---------------------------------------------------------------- deletion and desired capacity


def test_delete_lowers_desired_capacity_by_exactly_the_deleted_members(rig: Rig) -> None:
    backend = rig.backend()
    backend.create("linux", ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    backend.list("linux")  # running: attached, desired capacity 2
    assert rig.desired() == 2
    backend.delete("linux", ["garo-eng-linux-1"])
    assert rig.desired() == 1
    assert [garo_name(i) for i in rig.live()] == ["garo-eng-linux-2"]
    # One instance: one TerminateInstanceInAutoScalingGroup is fewer calls than detaching, then terminating.
    ops = [op for op, _ in rig.gaps.requests]
    singles = [p for op, p in rig.gaps.requests if op == "TerminateInstanceInAutoScalingGroup"]
    assert len(singles) == 1 and singles[0]["ShouldDecrementDesiredCapacity"] is True
    assert "DetachInstances" not in ops
    assert "SetDesiredCapacity" not in [op for op, _ in rig.gaps.requests]  # never resized


# ---------------------------------------------------------------- warm pool


def test_resume_takes_warm_instances_and_raises_desired_capacity(rig: Rig) -> None:
    backend = rig.backend()
    rig.gaps.seed_warm(ASG, ["", ""])  # launched by the ASG: no Name tag of ours
    standby = [i for i in backend.list("linux") if i.state is InstanceState.STANDBY]
    assert len(standby) == 2 and all(i.name.startswith("garo-eng-linux-w-") for i in standby)
    resumed = backend.resume_standby("linux", 1)
    assert len(resumed) == 1 and resumed[0] in {i.name for i in standby}
    assert rig.desired() == 1
    after = {i.name: i.state for i in backend.list("linux")}
    assert after[resumed[0]] is InstanceState.RUNNING
    assert [s for s in after.values() if s is InstanceState.STANDBY] == [InstanceState.STANDBY]


# ---------------------------------------------------------------- throttling (botocore's retries)


def _throttle(times: int, operation: str, hits: list[int]) -> Callable[..., Any]:
    """A before-send hook: the first ``times`` sends of ``operation`` get EC2's throttling answer."""
    left = [times]

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def stream(self, **_: Any) -> Iterator[bytes]:
            yield self.body

    def handler(request: Any, **_: Any) -> Any:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        if f"Action={operation}" not in body:
            return None
        hits.append(left[0])
        if left[0] <= 0:
            return None
        left[0] -= 1
        xml = (
            b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
            b"</Message></Error></Errors><RequestID>x</RequestID></Response>"
        )
        return AWSResponse(request.url, 503, {}, Raw(xml))

    return handler


def test_throttling_is_retried_by_botocore_with_backoff(rig: Rig, no_sleep: list[float]) -> None:
    session = rig.gaps.session()
    hits: list[int] = []
    session.events.register("before-send.ec2.DescribeInstances", _throttle(2, "DescribeInstances", hits))
    backend = rig.backend(session=session, config=default_config("standard", 5))
    assert backend.list("linux") == []
    assert len(hits) == 3  # two throttled attempts, then the one that went through
    assert len(no_sleep) >= 2 and all(d > 0 for d in no_sleep[:2])  # botocore's own backoff in between


def test_throttling_beyond_the_retry_budget_is_reported_as_throttled(rig: Rig, no_sleep: list[float]) -> None:
    session = rig.gaps.session()
    hits: list[int] = []
    session.events.register("before-send.ec2.DescribeInstances", _throttle(10, "DescribeInstances", hits))
    backend = rig.backend(session=session, config=default_config("standard", 3))
    with pytest.raises(BackendError) as excinfo:
        backend.list("linux")
    assert excinfo.value.reason is Failure.THROTTLED and excinfo.value.retryable
    assert len(hits) == 4  # the first attempt and botocore's max_attempts=3 retries, then the error is ours


# ---------------------------------------------------------------- JIT delivery through S3


def test_jit_config_is_one_object_per_instance_and_gone_when_cleared_or_deleted(rig: Rig) -> None:
    backend = rig.backend()
    backend.create("linux", ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    backend.list("linux")
    ids = {n: rig.live(n)[0]["InstanceId"] for n in ("garo-eng-linux-1", "garo-eng-linux-2")}
    backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: "c2VjcmV0LTE="})
    backend.set_metadata("linux", "garo-eng-linux-2", {JIT_KEY: "c2VjcmV0LTI="})
    keys = sorted(o["Key"] for o in rig.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))
    assert keys == sorted(jit_key(i, ROLE) for i in ids.values())
    assert all(k == f"jit/{ROLE}:{ids[n]}" for n, k in ((n, jit_key(ids[n], ROLE)) for n in ids))
    backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: ""})  # used: cleared
    backend.delete("linux", ["garo-eng-linux-2"])  # never read: gone with its instance
    assert rig.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert "c2VjcmV0" not in repr(backend.list("linux"))


def test_metadata_for_an_unknown_instance_changes_nothing_and_hides_the_secret(rig: Rig) -> None:
    backend = rig.backend()
    with pytest.raises(BackendError) as excinfo:
        backend.set_metadata("linux", "garo-eng-linux-9", {JIT_KEY: "c2VjcmV0LTk="})
    assert excinfo.value.reason is Failure.NOT_FOUND and "c2VjcmV0" not in str(excinfo.value)
    assert rig.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


# ---------------------------------------------------------------- listing


def test_concurrent_listings_share_one_round_of_calls(rig: Rig) -> None:
    backend = rig.backend(list_ttl=30)
    backend.create("linux", ["garo-eng-linux-1"], {})
    before = sum(op == "DescribeInstances" for op, _ in rig.gaps.requests)
    threads = [threading.Thread(target=backend.list, args=("linux",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(op == "DescribeInstances" for op, _ in rig.gaps.requests) - before == 1


def test_unknown_group_is_not_found(rig: Rig) -> None:
    with pytest.raises(BackendError) as excinfo:
        rig.backend().list("gpu")
    assert excinfo.value.reason is Failure.NOT_FOUND


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [
        ("InsufficientInstanceCapacity", 500, Failure.CAPACITY),
        ("Server.InsufficientInstanceCapacity", 500, Failure.CAPACITY),
        ("Unsupported", 400, Failure.CAPACITY),
        ("InsufficientFreeAddressesInSubnet", 400, Failure.CAPACITY),
        ("SpotMaxPriceTooLow", 400, Failure.CAPACITY),
        ("VcpuLimitExceeded", 400, Failure.QUOTA),
        ("MaxSpotInstanceCountExceeded", 400, Failure.QUOTA),
        ("RequestLimitExceeded", 503, Failure.THROTTLED),
        ("Throttling", 400, Failure.THROTTLED),
        ("InternalError", 500, Failure.UNAVAILABLE),
        ("IdempotentParameterMismatch", 400, Failure.CONFLICT),
        ("InvalidInstanceID.NotFound", 400, Failure.NOT_FOUND),
        ("InvalidParameterValue", 400, Failure.INVALID),
        ("UnauthorizedOperation", 403, Failure.INVALID),
    ],
)
def test_aws_error_codes_map_onto_the_backend_vocabulary(code: str, status: int, reason: Failure) -> None:
    assert failure_for(code, status) is reason


# ---------------------------------------------------------------- the agent's settings on AWS


def _aws_stack() -> str:
    import json

    raw = {
        "garo:kind": "department", "garo:cloud": "aws", "garo:region": REGION, "garo:department": "eng",
        "gcp:project": "acme-ci-hub",
        "garo:github": {"org": "octo-org"}, "garo:network": {"cidr": "10.20.0.0/20"},
        "garo:groups": [{"name": "linux", "labels": ["self-hosted", "eng-linux"], "machineType": "m6i.large"}],
    }  # fmt: skip
    return json.dumps({"config": raw})


def test_agent_on_aws_opens_the_aws_backend_with_derived_asg_names() -> None:
    from scaler.agent.cli import open_backend
    from scaler.agent.settings import load

    env = {
        "GARO_STACK_CONFIG": _aws_stack(),
        "GARO_JIT_BUCKET": BUCKET,
        "GARO_RUNNER_ROLE_ID": ROLE,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    settings = load(env)
    assert settings.aws is not None and settings.aws.jit_bucket == BUCKET
    backend = open_backend(settings)
    assert isinstance(backend, AwsBackend)
    assert backend.groups["linux"] == AwsGroup("garo-eng-linux", ("m6i.large",))


def test_agent_on_aws_without_its_jit_bucket_is_refused_with_the_variable_named() -> None:
    from scaler.agent.settings import SettingsError, load

    with pytest.raises(SettingsError, match="GARO_JIT_BUCKET"):
        load({"GARO_STACK_CONFIG": _aws_stack(), "GARO_RUNNER_ROLE_ID": ROLE})
    with pytest.raises(SettingsError, match="no ASG for group"):
        load(
            {
                "GARO_STACK_CONFIG": _aws_stack(),
                "GARO_JIT_BUCKET": BUCKET,
                "GARO_RUNNER_ROLE_ID": ROLE,
                "GARO_AWS_ASGS": '{"gpu": {"asg": "x"}}',
            }
        )
