"""What one listing of an Auto Scaling group says about each of its instances: pure functions, no calls.

The backend (:mod:`scaler.backends.aws`) lists a group with ``DescribeInstances``
by the ``garo-asg`` tag, and reads the ASG's own membership and warm pool.
These functions join the three into rows, one per instance: the instance's
Garo name (from its launch-index tag when it was launched in a batch, else its
``Name``, else one derived from its id: a warm instance the ASG launched), its
tags as Garo reads them, and where it stands (EC2 state, ASG lifecycle, warm).
Kept apart from the calls so that the rules for names and states read in one
place, and can be checked against every state AWS's published model names
(tests/test_aws_listing.py), including those moto never produces.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scaler.backends.aws_launch import is_launch_tag, launch_identity
from scaler.backends.base import SECRET_METADATA, STATE_LABEL, Instance, InstanceState
from scaler.naming import INSTANCE_NAME_RE

ASG_TAG = "garo-asg"  # every instance of a group carries its ASG's name (infra propagates it to warm instances)
DEPARTMENT_TAG = "garo-department"
BUCKET_TAG = "garo-jit-bucket"  # where the boot agent finds its JIT config (read through IMDS tags)
AGENT_URL_TAG = "garo-agent-url"  # where the boot agent pulls its JIT config instead, when the agent serves it
# Tags the backend writes for itself: never shown as an instance's metadata.
BOOKKEEPING_TAGS = frozenset({ASG_TAG, DEPARTMENT_TAG, BUCKET_TAG, AGENT_URL_TAG, STATE_LABEL, "Name"})
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]  # DescribeInstances filter
WARM_READY = frozenset({"Warmed:Stopped", "Warmed:Hibernated"})


@dataclass
class Row:
    """One instance of a group as the listing sees it."""

    id: str
    name: str
    asg: str
    ec2_state: str
    tags: dict[str, str]
    launched: float
    zone: str
    lifecycle: str = ""  # the ASG's (InService, Pending, Warmed:Stopped ...); "" when not a member
    warm: bool = False
    batched: bool = False  # launched with others: its facts came from its garo-launch-<index> tag


def rows_of(
    pages: Iterable[Mapping[str, Any]], asg: str, prefix: str, lifecycle: Mapping[str, str], warm: Mapping[str, str]
) -> list[Row]:
    """Rows from ``DescribeInstances`` pages, given the ASG's members' and warm pool's lifecycle states by id.

    ``prefix`` is the group's name prefix (:func:`scaler.naming.group_prefix`),
    for the names of warm instances the ASG launched without one.
    """
    rows: list[Row] = []
    for page in pages:
        for reservation in page.get("Reservations", []):
            for item in reservation.get("Instances", []):
                iid = str(item["InstanceId"])
                tags = {str(t["Key"]): str(t.get("Value", "")) for t in item.get("Tags", [])}
                index = item.get("AmiLaunchIndex")
                launched_as = launch_identity(tags, int(index) if index is not None else None)
                name = launched_as[0] if launched_as else tags.get("Name", "")
                if launched_as:
                    # Tags written since (a relabelled garo-job, garo-state) win over the launch's facts.
                    tags = {**launched_as[1], **{k: v for k, v in tags.items() if not is_launch_tag(k)}}
                if not INSTANCE_NAME_RE.match(name):
                    name = f"{prefix}w-{iid.removeprefix('i-')}"  # a warm instance the ASG launched
                launched = item.get("LaunchTime")
                rows.append(
                    Row(
                        id=iid,
                        name=name,
                        asg=asg,
                        ec2_state=str(item.get("State", {}).get("Name", "")),
                        tags=tags,
                        launched=launched.timestamp() if launched is not None else time.time(),
                        zone=str(item.get("Placement", {}).get("AvailabilityZone", "")),
                        lifecycle=warm.get(iid) or lifecycle.get(iid, ""),
                        warm=iid in warm,
                        batched=launched_as is not None,
                    )
                )
    return rows


def instance_of(group: str, row: Row) -> Instance:
    """The row as the agent sees every backend's VMs: state, the boot agent's label, and facts (never a secret)."""
    labels = {STATE_LABEL: row.tags[STATE_LABEL]} if STATE_LABEL in row.tags else {}
    return Instance(
        name=row.name,
        group=group,
        state=state_of(row),
        created_at=row.launched,
        labels=labels,
        zone=row.zone,
        metadata={
            k: v
            for k, v in row.tags.items()
            if v and k.startswith("garo-") and k not in BOOKKEEPING_TAGS and k not in SECRET_METADATA
        },
    )


def state_of(row: Row) -> InstanceState:
    """EC2's state and the ASG's lifecycle, as one of Garo's instance states.

    Only an instance in service is usable; a warm one stopped or hibernated is
    standby; one the ASG is terminating or has terminated (``Terminating:Wait``,
    ``Terminated``, ``Warmed:Terminated`` ...) is going, whatever EC2 says yet.
    """
    if row.ec2_state in ("shutting-down", "terminated") or row.lifecycle.startswith(("Terminat", "Warmed:Terminat")):
        return InstanceState.DELETING
    if row.warm:
        return InstanceState.STANDBY if row.lifecycle in WARM_READY else InstanceState.CREATING
    if row.ec2_state in ("stopping", "stopped"):
        return InstanceState.STANDBY
    if row.ec2_state == "running" and row.lifecycle == "InService":
        return InstanceState.RUNNING
    return InstanceState.CREATING  # launching, or running but not yet in service in its ASG
