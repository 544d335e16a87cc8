"""Instances in and out of their Auto Scaling groups, never by size: attach, detach, terminate, leave the warm pool.

The ASG must never pick its own victims, so the backend changes its desired
capacity only as a side effect of naming instances: ``AttachInstances`` raises
it by the instances attached, ``DetachInstances`` with
``ShouldDecrementDesiredCapacity`` (and, for members AWS will not detach,
``TerminateInstanceInAutoScalingGroup``) lowers it by exactly those. Resuming
the warm pool raises it (``SetDesiredCapacity``, in the backend) and waits here
until the instances that left the pool show.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from botocore.exceptions import ClientError, WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from scaler.backends.aws_errors import backend_error, error_parts, failure_for
from scaler.backends.aws_listing import Row
from scaler.backends.base import Failure

log = logging.getLogger(__name__)

ATTACH_LIMIT = 20  # AttachInstances, DetachInstances: "You can specify up to 20 instances"
DETACHABLE = frozenset({"InService", "Standby"})  # lifecycle states DetachInstances accepts


class AsgMembership:
    """Membership calls on one Auto Scaling client; ``resume_wait`` and ``resume_poll`` pace the warm-pool waiter."""

    def __init__(self, autoscaling: Any, resume_wait: float, resume_poll: int) -> None:
        self.autoscaling = autoscaling
        self.resume_wait, self.resume_poll = resume_wait, resume_poll

    def attach_ready(self, asg: str, rows: Iterable[Row]) -> None:
        """Attach our running instances that are not members yet (AWS refuses them before ``running``)."""
        ready = [r for r in rows if r.asg == asg and not r.lifecycle and r.ec2_state == "running"]
        for start in range(0, len(ready), ATTACH_LIMIT):
            batch = ready[start : start + ATTACH_LIMIT]
            try:
                self.autoscaling.attach_instances(AutoScalingGroupName=asg, InstanceIds=[r.id for r in batch])
            except ClientError as exc:
                code, _, _ = error_parts(exc)
                log.info("attach refused; retried on the next listing", extra={"asg": asg, "code": code})
                continue
            for row in batch:
                row.lifecycle = "Pending"

    def detach(self, rows: Iterable[Row]) -> list[str]:
        """Take members out of their ASGs, lowering desired capacity by exactly them; the ids now loose.

        ``DetachInstances`` (up to 20 ids) with ``ShouldDecrementDesiredCapacity``,
        then one ``TerminateInstances`` for all (the caller), instead of one
        ``TerminateInstanceInAutoScalingGroup`` per instance. A batch AWS refuses
        (an instance changed state since the listing) goes one by one the old way.
        """
        by_asg: dict[str, list[Row]] = {}
        for row in rows:
            by_asg.setdefault(row.asg, []).append(row)
        loose: list[str] = []
        for asg, members in by_asg.items():
            for start in range(0, len(members), ATTACH_LIMIT):
                batch = members[start : start + ATTACH_LIMIT]
                try:
                    self.autoscaling.detach_instances(
                        AutoScalingGroupName=asg,
                        InstanceIds=[r.id for r in batch],
                        ShouldDecrementDesiredCapacity=True,
                    )
                except ClientError as exc:
                    code, _, status = error_parts(exc)
                    if failure_for(code, status) in (Failure.THROTTLED, Failure.UNAVAILABLE):
                        raise backend_error(exc, "DetachInstances") from None
                    log.info("detach refused; terminating one by one", extra={"asg": asg, "code": code})
                    for row in batch:
                        self.terminate_in_asg(row)
                    continue
                loose += [r.id for r in batch]
        return loose

    def terminate_in_asg(self, row: Row) -> None:
        """One member out and terminated, desired capacity lowered by one (for members AWS will not detach)."""
        try:
            self.autoscaling.terminate_instance_in_auto_scaling_group(
                InstanceId=row.id, ShouldDecrementDesiredCapacity=True
            )
        except ClientError as exc:
            code, message, status = error_parts(exc)
            if failure_for(code, status) is Failure.NOT_FOUND or "not part of" in message.lower():
                return  # gone already (or never attached): nothing to decrement
            raise backend_error(exc, "TerminateInstanceInAutoScalingGroup") from None

    def wait_for_warm_exit(self, asg: str, warm_ids: Sequence[str], count: int) -> None:
        """Wait (a botocore waiter on DescribeAutoScalingGroups) until ``count`` of ``warm_ids`` are ASG members."""
        listed = "[" + ",".join(f'"{i}"' for i in warm_ids) + "]"
        model = WaiterModel(
            {
                "version": 2,
                "waiters": {
                    "WarmInstancesJoined": {
                        "operation": "DescribeAutoScalingGroups",
                        "delay": self.resume_poll,
                        "maxAttempts": max(1, int(self.resume_wait / max(self.resume_poll, 1))),
                        "acceptors": [
                            {
                                "matcher": "path",
                                "argument": f"length(AutoScalingGroups[].Instances[] | [?contains(`{listed}`, "
                                f"InstanceId)]) >= `{count}`",
                                "expected": True,
                                "state": "success",
                            }
                        ],
                    }
                },
            }
        )
        try:
            create_waiter_with_client("WarmInstancesJoined", model, self.autoscaling).wait(AutoScalingGroupNames=[asg])
        except WaiterError:
            log.warning("warm instances were slow to leave the pool", extra={"asg": asg})


def detach_calls(rows: Sequence[Row]) -> int:
    """``DetachInstances`` calls that take ``rows`` out of their ASGs (up to 20 ids each, one ASG per call)."""
    per_asg = Counter(r.asg for r in rows)
    return sum(-(-n // ATTACH_LIMIT) for n in per_asg.values())
