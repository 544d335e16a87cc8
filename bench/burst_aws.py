"""Burst on AWS: 1,000 queued jobs within 10 s for one group, through the real agent and AwsBackend on moto.

``bench/burst.py --cloud aws`` runs this. EC2, Auto Scaling and S3 are a moto
server over HTTP on loopback (in this process), with an ASG, a launch template
and a /20 subnet in each of two AZs, behind ``AwsGaps`` (tests/harness/aws.py:
moto launches ``MinCount`` instances where AWS launches up to ``MaxCount``, and
has no ClientToken idempotency); GitHub is the same budgeted simulator as the
GCP burst (the real :class:`JitBudget`, real time). Every AWS call the agent's
boto3 session makes is counted by operation with botocore's ``after-call``
event, with its HTTP status; the time until all capacity is requested is when
the ``RunInstances`` that launched the target's last instance answered.

Then every job completes (a ``completed`` event naming its VM, once the agent
holds its config), the agent deletes the VMs, and the run ends when the group
is empty: calls per job count create, delivery, clearing, delete and listing.
moto adds no latency of its own and models no throttling or capacity errors,
so the figures are call counts and the agent's own pace, not AWS's.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from bench.burst import IDLE_WAIT, BudgetedGitHub, publish_due
from bench.docs import heading
from scaler.agent import Agent
from scaler.agent.executor import METADATA_WRITERS
from scaler.backends.aws import AwsBackend, AwsGroup
from scaler.backends.aws_launch import is_launch_tag, launch_identity
from scaler.backends.base import JOB_KEY
from scaler.config import StackConfig, parse_stack_config
from scaler.demo.aws import start_moto
from scaler.github.models import JitConfig
from scaler.naming import job_of
from tests.agent.gcpkit import DEPARTMENT, GROUP, LABELS
from tests.agent.membus import MemoryBus
from tests.harness.aws import FAKE_CREDENTIALS, REGION, AwsGaps, make_bucket

ASG, BUCKET, ROLE = f"garo-{DEPARTMENT}-{GROUP}", f"garo-{DEPARTMENT}-jit", "AROAEXAMPLERUNNER"
INSTANCE_TYPE = "m6i.large"
AGENT_URL = "http://10.20.0.5:8780"  # the agent's JIT endpoint: configs wait in its memory, no S3 object


def aws_config(max_vms: int) -> StackConfig:
    return parse_stack_config(
        {
            "gcp:project": "acme-ci-hub",
            "garo:kind": "department",
            "garo:cloud": "aws",
            "garo:region": REGION,
            "garo:department": DEPARTMENT,
            "garo:github": {"org": "octo-org"},
            "garo:network": {"cidr": "10.20.0.0/20"},
            "garo:groups": [
                {
                    "name": GROUP,
                    "labels": LABELS,
                    "runnerGroupId": 1,
                    "max": max_vms,
                    "machineType": INSTANCE_TYPE,
                    "timeToStart": 600,
                    "timeToLive": 3600,
                }
            ],
        }
    )


def declare_group(clients: Any, max_size: int) -> None:
    """A VPC with a /20 subnet in each of two AZs (room for thousands of instances), a launch template, an ASG."""
    ec2 = clients("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{16 * i}.0/20", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in enumerate("ab")
    ]
    image = ec2.describe_images(Filters=[{"Name": "name", "Values": ["ubuntu/images/hvm-ssd/*"]}])["Images"][0]
    template = ec2.create_launch_template(
        LaunchTemplateName=ASG,
        LaunchTemplateData={
            "ImageId": image["ImageId"],
            "InstanceType": INSTANCE_TYPE,
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        },
    )["LaunchTemplate"]["LaunchTemplateId"]
    clients("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=ASG, MinSize=0, MaxSize=max_size, DesiredCapacity=0,
        VPCZoneIdentifier=",".join(subnets), LaunchTemplate={"LaunchTemplateId": template, "Version": "$Default"},
    )  # fmt: skip


class AwsCalls:
    """Every answer the agent's session got: by operation, with when each RunInstances launched how many."""

    def __init__(self) -> None:
        self.by_method: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.launched: list[float] = []  # one entry per instance launched: seconds since the start
        self.started = time.monotonic()

    def __call__(self, http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
        self.by_method[model.name] += 1
        if http_response.status_code >= 400:
            self.errors[f"{model.name} {http_response.status_code}"] += 1
        elif model.name == "RunInstances":
            self.launched += [time.monotonic() - self.started] * len(parsed.get("Instances", []))


def live_jobs(clients: Any) -> dict[str, int]:
    """Our live instances by Garo name, with the job each was made for (read as the backend reads them)."""
    found: dict[str, int] = {}
    pages = clients("ec2").get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:garo-asg", "Values": [ASG]},
                 {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    )  # fmt: skip
    for page in pages:
        for instance in (i for r in page["Reservations"] for i in r["Instances"]):
            tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
            launched = launch_identity(tags, instance.get("AmiLaunchIndex"))
            name, facts = launched if launched else (tags.get("Name", ""), {})
            facts = {**facts, **{k: v for k, v in tags.items() if not is_launch_tag(k)}}
            if facts.get(JOB_KEY, "").isdigit():
                found[name] = int(facts[JOB_KEY])
    return found


def complete(bus: MemoryBus, name: str, job_id: int, runner_id: int) -> None:
    """The ``completed`` event GitHub sends once the job on runner ``name`` finished."""
    job = {"id": job_id, "labels": ["self-hosted"], "status": "completed", "conclusion": "success"}
    job.update(runner_name=name, runner_id=runner_id)
    bus.publish_event(
        DEPARTMENT, GROUP, "completed", {"workflow_job": job, "repository": {"full_name": "octo-org/app"}}
    )


def run(jobs: int, max_vms: int, github_latency: float, spread: float = 10.0, list_ttl: float = 5.0) -> dict[str, Any]:
    import boto3

    server, endpoint = start_moto()  # the demo's: an empty account on a free loopback port
    try:

        def clients(service: str) -> Any:
            return boto3.client(service, region_name=REGION, endpoint_url=endpoint, **FAKE_CREDENTIALS)

        declare_group(clients, max(max_vms, 1))
        make_bucket(clients, BUCKET)
        session = AwsGaps(endpoint, REGION).session()
        calls = AwsCalls()
        session.events.register("after-call", calls)
        backend = AwsBackend(
            DEPARTMENT, REGION, {GROUP: AwsGroup(ASG, (INSTANCE_TYPE,))}, jit_bucket=BUCKET,
            runner_role_id=ROLE, session=session, endpoint_url=endpoint, list_ttl=list_ttl, agent_url=AGENT_URL,
        )  # fmt: skip
        github = BudgetedGitHub(github_latency)
        configured: dict[str, int] = {}  # runner names whose JIT config the agent generated: their runner ids
        generate = github.generate_jit_config

        def generate_and_note(name: str, runner_group_id: int, labels: Sequence[str]) -> JitConfig:
            config = generate(name, runner_group_id, labels)
            configured[name] = config.runner_id
            return config

        github.generate_jit_config = generate_and_note  # type: ignore[method-assign]
        bus = MemoryBus(time.time)
        agent = Agent(
            aws_config(max_vms), backend, github, bus, registry=CollectorRegistry(), pull_timeout=0,
            jit_budget=github.budget,
        )  # fmt: skip
        target = min(jobs, max_vms)
        start = calls.started = time.monotonic()
        published = 0
        while True:
            published = publish_due(bus, jobs, published, start, spread)
            moved = len(calls.launched), len(agent.book.pending_jit)
            agent.run_once()
            if published == jobs and (len(calls.launched), len(agent.book.pending_jit)) == moved:
                time.sleep(IDLE_WAIT)  # nothing moved (the JIT budget is spent): as the agent's bus pull would wait
            if len(calls.launched) >= target and not agent.book.pending_jit:
                break
            if time.monotonic() - start > 900:
                break
        created_s = time.monotonic() - start
        created = Counter(calls.by_method)
        group = clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"]
        members = len(group[0]["Instances"]) if group else 0
        objects = clients("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        jit_in_vault = len(backend.jit_vault)
        done: set[int] = set()
        listed_at = 0.0
        while time.monotonic() - start < 1800:
            for name, runner_id in list(configured.items()):
                job_id = job_of(DEPARTMENT, GROUP, name)
                if job_id is not None and job_id not in done:  # its runner got its config: the job runs, ends
                    complete(bus, name, job_id, runner_id)  # with the id GitHub gave its runner
                    done.add(job_id)
            # The bench's own check is a full DescribeInstances, which moto answers slowly for
            # hundreds of instances: only once every job completed, and not more often than the agent's.
            if len(done) >= jobs and time.monotonic() - listed_at >= list_ttl:
                listed_at = time.monotonic()
                if not live_jobs(clients):
                    break
            published = publish_due(bus, jobs, published, start, spread)
            agent.run_once()
            time.sleep(IDLE_WAIT)
        wall = time.monotonic() - start
        left = len(live_jobs(clients))
    finally:
        server.stop()
    requested = calls.launched[target - 1] if target and len(calls.launched) >= target else None
    jit_configs = github.calls.get("generate_jit_config", 0)
    total = sum(calls.by_method.values())
    before_total = sum(created.values())
    return {
        "cloud": "aws",
        "jobs": jobs,
        "max": max_vms,
        "target": target,
        "spread_s": spread,
        "cores": os.cpu_count() or 0,
        "list_ttl_s": list_ttl,
        "github_latency_ms": github_latency * 1000,
        "jit_per_minute": github.budget.per_minute,
        "writers": METADATA_WRITERS,
        "aws_calls": dict(sorted(calls.by_method.items())),
        "aws_per_job": {m: n / max(jobs, 1) for m, n in sorted(calls.by_method.items())},
        "aws_errors": dict(sorted(calls.errors.items())),
        "aws_total": total,
        "calls_per_job": total / max(jobs, 1),
        "create_calls": before_total,
        "create_calls_per_job": before_total / max(jobs, 1),
        "delete_calls": total - before_total,
        "delete_calls_per_job": (total - before_total) / max(jobs, 1),
        "github_calls": dict(sorted(github.calls.items())),
        "requested_s": requested,
        "created_s": created_s,
        "launched": len(calls.launched),
        "members": members,
        "jit_objects": objects,
        "jit_in_vault": jit_in_vault,
        "jit_configs": jit_configs,
        "completed": len(done),
        "left": left,
        "wall_s": wall,
        "held": len(agent.held),
    }


INTRO = """`bench/burst.py --cloud aws` (bench/burst_aws.py) publishes `queued` messages evenly over a few seconds for
one group and runs the real agent and AwsBackend against a moto server over HTTP on loopback (in the bench's own
process): an Auto Scaling group with a launch template and a /20 subnet in each of two AZs, and the JIT bucket. Every
call of the agent's boto3 session is counted by operation with botocore's `after-call` event. GitHub is the same
simulator as above, behind the real `JitBudget`, in real time. moto adds no latency, no throttling and no capacity
errors, so these entries measure how many AWS calls the agent makes per job and its own pace, not AWS's. Each
config waits in the agent's memory until its instance pulls it with its signed identity document (no AWS call;
the oldest entries wrote it to S3 with one `PutObject` per instance). Entries until 2026-11-30 launched each
instance with its own `RunInstances`, counted calls per instance and stopped once every config was handed out;
since then up to 40 names share a `RunInstances`, and every job then completes and the agent deletes its VM
(`DetachInstances`, up to 20, and one `TerminateInstances`), so calls per job count create, delivery, clearing,
deletion and listing. No runner runs a job here, so every runner is still listed idle when its job completes and
the agent deregisters it (`delete_runner`); a real ephemeral runner is listed busy, then goes by itself."""


def markdown(r: dict[str, Any], command: str, date: str | None = None) -> str:
    """One dated entry; every figure in it is a value of ``r`` (the run and its arguments)."""
    rows = "\n".join(f"| {m} | {n} | {r['aws_per_job'][m]:.3f} |" for m, n in r["aws_calls"].items())
    gh = ", ".join(f"{k} {v}" for k, v in r["github_calls"].items())
    errors = ", ".join(f"{k} ×{v}" for k, v in r["aws_errors"].items()) or "none"
    requested = "never" if r["requested_s"] is None else f"**{r['requested_s']:.1f} s** after the first message"
    return f"""{heading(date or time.strftime("%Y-%m-%d"), command)}

{r["jobs"]} jobs over {r["spread_s"]:g} s, max {r["max"]}; {r["cores"]} cores; moto over HTTP, listings cached \
{r["list_ttl_s"]:g} s; GitHub {r["github_latency_ms"]:g} ms per call, JIT budget {r["jit_per_minute"]}/min; the \
agent writes configs to up to {r["writers"]} instances at a time.

| AWS method | calls | per job |
|---|---|---|
{rows}
| **total** | **{r["aws_total"]}** | **{r["calls_per_job"]:.3f}** |

- Until the first {r["target"]} configs were handed out: {r["create_calls"]} calls ({r["create_calls_per_job"]:.3f} per job); \
after that (the VMs of the jobs beyond `max`, every job completing, every VM deleted): {r["delete_calls"]} calls ({r["delete_calls_per_job"]:.3f} per job).
- AWS errors answered: {errors}. GitHub calls: {gh}.
- All capacity requested ({r["target"]} instances launched): {requested}; instances launched \
{r["launched"]}, ASG members once the first {r["target"]} configs were handed out {r["members"]}.
- JIT configs generated: {r["jit_configs"]}; waiting to be pulled once the first {r["target"]} were handed out: \
{r["jit_in_vault"]} in the \
agent's memory, {r["jit_objects"]} as S3 objects (no runner boots in this bench).
- Jobs completed: {r["completed"]}; instances left at the end: {r["left"]}; messages still held: {r["held"]}.
- Wall time of the run: {r["wall_s"]:.1f} s ({r["created_s"]:.1f} s until the first {r["target"]} configs were handed out).
"""
