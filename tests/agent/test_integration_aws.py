"""The real agent on AWS, end to end: Prism for GitHub, moto (over HTTP) for EC2, Auto Scaling and S3.

Like test_integration_gcp: every queued job gets exactly one instance (one
``RunInstances`` per name, tagged with its job), each gets its JIT config as
its own S3 object, spent configs are removed, every completed job's instance
is terminated with the ASG's desired capacity decremented in the same call,
and neither stand-in rejected a single request (botocore validated each one
against the service model before it left, and moto answered each with 2xx).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from scaler import naming
from scaler.agent import Agent
from scaler.backends.aws import AwsBackend, AwsGroup, jit_key
from scaler.bus.sqlite import SqliteBus
from scaler.config import StackConfig, parse_stack_config
from scaler.github.client import GitHubClient
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS, REPO, Statuses, publish
from tests.harness.aws import REGION, AwsGaps, garo_identity, make_asg, make_bucket

JOBS = (5101, 5102, 5103)
ASG, BUCKET, ROLE = f"garo-{DEPARTMENT}-{GROUP}", f"garo-{DEPARTMENT}-jit", "AROAEXAMPLERUNNER"


def aws_config() -> StackConfig:
    return parse_stack_config(
        {
            "garo:kind": "department",
            "garo:cloud": "aws",
            "garo:region": REGION,
            "gcp:project": "acme-ci-hub",  # the hub's project: the subscription and the identity pool
            "garo:department": DEPARTMENT,
            "garo:github": {"org": "octo-org"},
            "garo:network": {"cidr": "10.20.0.0/20"},
            "garo:groups": [
                {"name": GROUP, "labels": LABELS, "runnerGroupId": 1, "max": 10, "machineType": "m6i.large"}
            ],
        }
    )


class AwsStatuses:
    """Every AWS answer the agent's clients received, by operation (botocore's after-call event)."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, int]] = Counter()
        self.rejected: list[tuple[str, int, str]] = []

    def __call__(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.seen[(model.name, http_response.status_code)] += 1
        if http_response.status_code >= 400:
            self.rejected.append((model.name, http_response.status_code, str(parsed.get("Error", {}))))


@pytest.fixture
def rig(
    prism_github: str,
    prism_session: Callable[..., requests.Session],
    moto_server: str,
    aws_clients: Callable[..., Any],
    tmp_path: Path,
) -> dict[str, Any]:
    make_asg(aws_clients, ASG)
    make_bucket(aws_clients, BUCKET)
    gaps = AwsGaps(moto_server)
    session = gaps.session()
    aws_statuses = AwsStatuses()
    session.events.register("after-call", aws_statuses)
    github_statuses = Statuses()
    prism = github_statuses.attach(prism_session({("GET", r"/actions/jobs/\d+$"): "dynamic=true"}))
    github = GitHubClient("octo-org", token="dev", api_url=prism_github, session=prism, registry=CollectorRegistry())
    backend = AwsBackend(
        DEPARTMENT, REGION, {GROUP: AwsGroup(ASG, ("m6i.large",))}, jit_bucket=BUCKET, runner_role_id=ROLE,
        session=session, endpoint_url=moto_server, list_ttl=0,
    )  # fmt: skip
    now = [1_700_000_000.0]
    bus = SqliteBus(
        tmp_path / "bus.db", subscription=f"agent-{DEPARTMENT}", filter={"department": DEPARTMENT}, clock=lambda: now[0]
    )
    agent = Agent(
        aws_config(), backend, github, bus, clock=lambda: now[0], registry=CollectorRegistry(), pull_timeout=0
    )
    return {
        "agent": agent, "bus": bus, "publisher": SqliteBus(tmp_path / "bus.db"), "now": now, "gaps": gaps,
        "aws": aws_statuses, "github": github_statuses, "ec2": aws_clients("ec2"), "s3": aws_clients("s3"),
        "asg": aws_clients("autoscaling"),
    }  # fmt: skip


def by_name(ec2: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for reservation in ec2.describe_instances(Filters=[{"Name": "tag:garo-asg", "Values": [ASG]}])["Reservations"]:
        for instance in reservation["Instances"]:
            name, tags = garo_identity(instance)
            found.setdefault(name, []).append({**instance, "tags": tags})
    return found


def jit_objects(s3: Any) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_every_queued_job_gets_one_instance_and_every_completed_one_is_terminated(rig: dict[str, Any]) -> None:
    agent, publisher, now, ec2, s3 = rig["agent"], rig["publisher"], rig["now"], rig["ec2"], rig["s3"]
    names = {job: naming.instance_name(DEPARTMENT, GROUP, job) for job in JOBS}

    for job in JOBS:
        publish(publisher, "queued", job)
    agent.step()
    for _ in range(10):  # instances run, get attached, get their configs; held messages are then acked
        if not agent.held:
            break
        now[0] += 6
        agent.run_once()
    assert agent.held == {}

    instances = by_name(ec2)
    assert sorted(instances) == sorted(names.values())
    for job, name in names.items():
        [instance] = instances[name]  # exactly one per job
        assert instance["tags"]["garo-job"] == str(job) and instance["tags"]["garo-repo"] == REPO
    ids = {name: instances[name][0]["InstanceId"] for name in names.values()}
    assert jit_objects(s3) == sorted(jit_key(i, ROLE) for i in ids.values())  # each its own config
    group = rig["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    assert sorted(i["InstanceId"] for i in group["Instances"]) == sorted(ids.values())
    runs = [p for op, p in rig["gaps"].requests if op == "RunInstances"]
    assert [r["MaxCount"] for r in runs] == [len(JOBS)]  # one call for the burst

    for runner_id, job in enumerate(JOBS, start=1):
        publish(publisher, "in_progress", job, runner=names[job], runner_id=runner_id)
    agent.run_once()
    assert jit_objects(s3) == []  # spent configs are gone

    for runner_id, job in enumerate(JOBS, start=1):
        publish(publisher, "completed", job, runner=names[job], runner_id=runner_id)
    agent.run_once()
    for _ in range(2):
        now[0] += 70
        agent.step()
    live = {
        n: [i for i in v if i["State"]["Name"] not in ("terminated", "shutting-down")] for n, v in by_name(ec2).items()
    }
    assert all(v == [] for v in live.values())
    group = rig["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 0 and group["Instances"] == []
    ops = [op for op, _ in rig["gaps"].requests]
    assert ops.count("DetachInstances") == 1 and ops.count("TerminateInstances") == 1
    assert "TerminateInstanceInAutoScalingGroup" not in ops
    assert ops.count("RunInstances") == 1 and "SetDesiredCapacity" not in ops

    # Nothing was refused: GitHub's OpenAPI (Prism) and moto answered every request with success.
    assert rig["github"].rejected == [] and rig["aws"].rejected == []
    assert any(path.endswith("/generate-jitconfig") and status == 201 for status, path in rig["github"].seen)
    bus = rig["bus"]
    now[0] += 3600
    assert bus.pull(100, 0) == []
