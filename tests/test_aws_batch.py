"""AWS at scale: many names per RunInstances, many instances per delete, each instance still itself.

On moto over HTTP through ``AwsGaps``, which adds what moto lacks (ClientToken
idempotency, capacity, launching up to ``MaxCount``) and checks every request
against botocore's service model (tests/harness/aws.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from scaler.backends.aws import AwsBackend, AwsGroup
from scaler.backends.aws_launch import BATCH_LIMIT, MAX_TAGS, TAG_VALUE_LIMIT, batches, launch_tag_value
from scaler.backends.base import JOB_KEY, REPO_KEY
from tests.harness.aws import REGION, AwsGaps, _error_reply, garo_name, make_asg, make_bucket

ASG, BUCKET, ROLE = "garo-eng-linux", "garo-eng-jit", "AROAEXAMPLERUNNER"


class Rig:
    def __init__(self, endpoint: str, clients: Callable[..., Any]) -> None:
        self.endpoint = endpoint
        self.net = make_asg(clients, ASG, max_size=100)
        make_bucket(clients, BUCKET)
        self.gaps = AwsGaps(endpoint)
        self.ec2, self.asg = clients("ec2"), clients("autoscaling")

    def backend(self, *, list_ttl: float = 0, session: Any = None) -> AwsBackend:
        return AwsBackend(
            "eng", REGION, {"linux": AwsGroup(ASG, ("m6i.large",))}, jit_bucket=BUCKET, runner_role_id=ROLE,
            session=session or self.gaps.session(), endpoint_url=self.endpoint, list_ttl=list_ttl,
        )  # fmt: skip

    def instances(self) -> list[dict[str, Any]]:
        found = self.ec2.describe_instances(Filters=[{"Name": "tag:garo-asg", "Values": [ASG]}])["Reservations"]
        return [i for r in found for i in r["Instances"]]

    def live(self) -> dict[str, dict[str, Any]]:
        """Live instances by Garo name (a name twice would show as a lost instance in the counts)."""
        alive = [i for i in self.instances() if i["State"]["Name"] not in ("terminated", "shutting-down")]
        assert len({garo_name(i) for i in alive}) == len(alive), "a name launched twice"
        return {garo_name(i): i for i in alive}

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [params for op, params in self.gaps.requests if op == operation]

    def desired(self) -> int:
        return int(self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0][
            "DesiredCapacity"
        ])  # fmt: skip


@pytest.fixture
def rig(moto_server: str, aws_clients: Callable[..., Any]) -> Rig:
    return Rig(moto_server, aws_clients)


def names(count: int, start: int = 0) -> list[str]:
    return [f"garo-eng-linux-{i}" for i in range(start, start + count)]


def facts(of: list[str]) -> dict[str, dict[str, str]]:
    return {n: {JOB_KEY: str(9_000 + i), REPO_KEY: f"octo-org/repo-{i}"} for i, n in enumerate(of)}


def test_a_batch_is_one_run_instances_and_each_instance_lists_under_its_own_name_and_facts(rig: Rig) -> None:
    wanted = names(7)
    result = rig.backend().create("linux", wanted, facts(wanted))
    assert result.created == tuple(wanted)
    runs = rig.calls("RunInstances")
    assert len(runs) == 1 and (runs[0]["MinCount"], runs[0]["MaxCount"]) == (1, 7)
    assert set(rig.live()) == set(wanted)
    # A restarted agent (nothing remembered) lists each instance under its name, with its own facts.
    listed = {i.name: dict(i.metadata) for i in rig.backend().list("linux")}
    assert listed == facts(wanted)


def test_the_jit_identity_check_finds_each_batched_instance_by_its_id(rig: Rig) -> None:
    wanted = names(4)
    launcher = rig.backend()
    launcher.create("linux", wanted, facts(wanted))
    restarted = rig.backend()
    restarted.list("linux")
    for name, instance in rig.live().items():
        assert launcher.instance_name(instance["InstanceId"]) == name  # from the RunInstances answer
        assert restarted.instance_name(instance["InstanceId"]) == name  # from a listing
    assert launcher.instance_name("i-0123456789abcdef0") is None


def test_a_partly_fulfilled_batch_sends_the_rest_to_the_next_zone_as_a_new_batch(rig: Rig) -> None:
    rig.gaps.limit(2, zone=f"{REGION}a")
    wanted = names(5)
    result = rig.backend().create("linux", wanted, facts(wanted))
    assert result.created == tuple(wanted) and not result.failed
    runs = rig.calls("RunInstances")
    assert [(r["SubnetId"], r["MaxCount"]) for r in runs] == [(rig.net["subnets"][0], 5), (rig.net["subnets"][1], 3)]
    live = rig.live()
    zones = Counter(i["Placement"]["AvailabilityZone"] for i in live.values())
    assert zones == {f"{REGION}a": 2, f"{REGION}b": 3}
    assert {n: dict(i.metadata) for n, i in ((i.name, i) for i in rig.backend().list("linux"))} == facts(wanted)


def test_a_batch_no_zone_can_hold_reports_the_names_left_and_launches_the_others(rig: Rig) -> None:
    rig.gaps.limit(2, zone=f"{REGION}a")
    rig.gaps.limit(1, zone=f"{REGION}b")
    result = rig.backend().create("linux", names(5), {})
    assert result.created == tuple(names(3)) and set(result.failed) == set(names(2, start=3))
    assert set(rig.live()) == set(names(3))


def test_a_retried_batch_returns_the_same_instances_and_launches_no_second_set(rig: Rig) -> None:
    wanted = names(6)
    a, b = rig.backend(list_ttl=600), rig.backend(list_ttl=600)
    assert a.list("linux") == [] and b.list("linux") == []  # both hold an empty cached view
    a.create("linux", wanted, facts(wanted))
    again = b.create("linux", wanted, facts(wanted))
    assert again.created == tuple(wanted)
    runs = rig.calls("RunInstances")
    assert len(runs) == 2 and runs[0]["ClientToken"] == runs[1]["ClientToken"] and runs[0]["MaxCount"] == 6
    assert len(rig.instances()) == 6 and set(rig.live()) == set(wanted)


def test_names_used_before_get_new_instances_when_the_same_batch_is_asked_again(rig: Rig) -> None:
    wanted = names(3)
    backend = rig.backend()
    backend.create("linux", wanted, facts(wanted))
    backend.list("linux")
    backend.delete("linux", wanted)
    again = backend.create("linux", wanted, facts(wanted))
    assert again.created == tuple(wanted)
    assert set(rig.live()) == set(wanted) and len(rig.instances()) == 6
    runs = rig.calls("RunInstances")
    assert runs[-1]["ClientToken"] != runs[0]["ClientToken"]  # salted: the first answered with terminated ones


def test_deleting_many_members_is_a_few_calls_and_lowers_desired_capacity_by_exactly_them(rig: Rig) -> None:
    wanted = names(25)
    backend = rig.backend()
    backend.create("linux", wanted, facts(wanted))
    backend.list("linux")  # running: attached
    assert rig.desired() == 25
    before = len(rig.gaps.requests)
    backend.delete("linux", wanted[:22])
    ops = Counter(op for op, _ in rig.gaps.requests[before:])
    assert ops["DetachInstances"] == 2 and ops["TerminateInstances"] == 1
    assert ops["TerminateInstanceInAutoScalingGroup"] == 0 and ops["SetDesiredCapacity"] == 0
    assert all(p["ShouldDecrementDesiredCapacity"] is True for p in rig.calls("DetachInstances"))
    assert rig.desired() == 3
    assert set(rig.live()) == set(wanted[22:])
    group = rig.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    assert {garo_name(rig.live()[n]) for n in wanted[22:]} == set(wanted[22:])
    assert len(group["Instances"]) == 3  # the ASG launched no replacements


def test_a_detach_aws_refuses_falls_back_to_terminating_each_member_with_decrement(rig: Rig) -> None:
    """AWS refuses to detach a member that left InService since the listing: one by one, the old way."""
    session = rig.gaps.session()
    refused: list[int] = []

    def refuse(model: Any, **_: Any) -> Any:
        refused.append(1)
        return _error_reply(model, 400, "ValidationError", "The instance is not in InService or Standby.")

    session.events.register("before-call.auto-scaling.DetachInstances", refuse)
    wanted = names(4)
    backend = rig.backend(session=session)
    backend.create("linux", wanted, facts(wanted))
    backend.list("linux")
    backend.delete("linux", wanted[:3])
    assert refused == [1]
    singles = rig.calls("TerminateInstanceInAutoScalingGroup")
    assert len(singles) == 3 and all(p["ShouldDecrementDesiredCapacity"] is True for p in singles)
    assert rig.desired() == 1 and set(rig.live()) == {wanted[3]}


def test_one_or_two_members_go_one_by_one_when_that_is_no_more_calls(rig: Rig) -> None:
    wanted = names(3)
    backend = rig.backend()
    backend.create("linux", wanted, facts(wanted))
    backend.list("linux")
    before = len(rig.gaps.requests)
    backend.delete("linux", wanted[:2])
    ops = Counter(op for op, _ in rig.gaps.requests[before:])
    assert ops["TerminateInstanceInAutoScalingGroup"] == 2 and ops["DetachInstances"] == 0
    assert rig.desired() == 1 and set(rig.live()) == {wanted[2]}


def test_a_relabelled_or_cleared_fact_of_a_batched_instance_is_its_own(rig: Rig) -> None:
    wanted = names(3)
    backend = rig.backend()
    backend.create("linux", wanted, facts(wanted))
    backend.set_metadata("linux", wanted[0], {JOB_KEY: "4242"})  # a stolen VM runs another job
    backend.set_metadata("linux", wanted[1], {REPO_KEY: ""})
    listed = {i.name: dict(i.metadata) for i in rig.backend().list("linux")}
    assert listed[wanted[0]] == {**facts(wanted)[wanted[0]], JOB_KEY: "4242"}
    assert listed[wanted[1]] == {JOB_KEY: facts(wanted)[wanted[1]][JOB_KEY]}
    assert listed[wanted[2]] == facts(wanted)[wanted[2]]


def test_a_full_batch_stays_within_ec2s_tag_limits_and_the_next_name_starts_a_new_one(rig: Rig) -> None:
    wanted = names(BATCH_LIMIT + 1)
    long_repo = {n: {JOB_KEY: str(2**62 + i), REPO_KEY: f"{'o' * 39}/{'r' * 100}"} for i, n in enumerate(wanted)}
    rig.backend().create("linux", wanted, long_repo)
    runs = rig.calls("RunInstances")
    assert [r["MaxCount"] for r in runs] == [BATCH_LIMIT, 1]
    tags = runs[0]["TagSpecifications"][0]["Tags"]
    assert len(tags) <= MAX_TAGS - 5  # room left for garo-state, garo-reason, garo-keep ...
    assert all(len(t["Value"]) <= TAG_VALUE_LIMIT and len(t["Key"]) <= 128 for t in tags)
    assert set(rig.live()) == set(wanted)


def test_a_burst_of_many_batches_uses_the_same_zone_while_it_has_room(rig: Rig) -> None:
    wanted = names(2 * BATCH_LIMIT + 1)
    result = rig.backend().create("linux", wanted, facts(wanted))
    assert result.created == tuple(wanted) and not result.failed
    runs = rig.calls("RunInstances")
    assert [r["MaxCount"] for r in runs] == [BATCH_LIMIT, BATCH_LIMIT, 1]
    assert {r["SubnetId"] for r in runs} == {rig.net["subnets"][0]}  # a full answer is no reason to move on
    assert set(rig.live()) == set(wanted)


def test_a_name_whose_facts_fit_no_tag_value_launches_alone() -> None:
    odd = {"garo-eng-linux-2": {REPO_KEY: "has space/in it"}, "garo-eng-linux-3": {JOB_KEY: "9" * 300}}
    assert launch_tag_value("garo-eng-linux-2", odd["garo-eng-linux-2"]) is None
    assert batches(names(4), odd) == [
        ["garo-eng-linux-0", "garo-eng-linux-1"],
        ["garo-eng-linux-2"],
        ["garo-eng-linux-3"],
    ]
