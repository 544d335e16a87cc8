"""How the AWS backend reads an instance's state: every state AWS's published models name, moto or not.

moto produces few of the Auto Scaling lifecycle states (no lifecycle hooks, no
``Terminated`` rows, no ``Warmed:Pending:Wait``), so the mapping is checked here
against botocore's own service models: a state AWS adds shows up in this test,
and an instance AWS is terminating never looks usable or resumable to the agent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.session
import pytest

from scaler.backends.aws_listing import Row, instance_of, rows_of, state_of
from scaler.backends.base import STATE_LABEL, InstanceState

SESSION = botocore.session.get_session()
LIFECYCLE = list(SESSION.get_service_model("autoscaling").shape_for("LifecycleState").enum)
EC2_STATES = list(SESSION.get_service_model("ec2").shape_for("InstanceStateName").enum)


def _row(ec2_state: str, lifecycle: str, warm: bool = False) -> Row:
    return Row("i-0abc", "garo-eng-linux-7", "garo-eng-linux", ec2_state, {}, 0.0, "eu-west-1a", lifecycle, warm)


@pytest.mark.parametrize("lifecycle", ["", *LIFECYCLE])
@pytest.mark.parametrize("ec2_state", EC2_STATES)
def test_every_published_state_maps_to_what_the_agent_may_do_with_the_instance(ec2_state: str, lifecycle: str) -> None:
    state = state_of(_row(ec2_state, lifecycle, warm=lifecycle.startswith("Warmed:")))

    going = ec2_state in ("shutting-down", "terminated") or "Terminat" in lifecycle
    if going:
        assert state is InstanceState.DELETING  # never counted as capacity, never resumed
    elif ec2_state == "running" and lifecycle == "InService":
        assert state is InstanceState.RUNNING
    elif lifecycle in ("Warmed:Stopped", "Warmed:Hibernated") or (
        not lifecycle.startswith("Warmed:") and ec2_state in ("stopping", "stopped")
    ):
        assert state is InstanceState.STANDBY
    else:
        assert state is InstanceState.CREATING  # on its way (launching, attaching, leaving the pool): not usable yet


def test_a_batched_instance_reads_its_own_name_and_later_tags_win_over_its_launch_facts() -> None:
    batch = {"garo-launch-0": "garo-eng-linux-11 garo-job=11", "garo-launch-1": "garo-eng-linux-12 garo-job=12"}
    page = {
        "Reservations": [
            {
                "Instances": [
                    {
                        "InstanceId": "i-0002",
                        "AmiLaunchIndex": 1,
                        "State": {"Name": "running"},
                        "LaunchTime": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
                        "Placement": {"AvailabilityZone": "eu-west-1b"},
                        "Tags": [
                            {"Key": k, "Value": v} for k, v in {**batch, "garo-job": "99", STATE_LABEL: "done"}.items()
                        ],
                    },
                    {"InstanceId": "i-0003", "State": {"Name": "stopped"}, "Tags": [{"Key": "garo-asg", "Value": "a"}]},
                ]
            }
        ]
    }

    rows = rows_of([page], "garo-eng-linux", "garo-eng-linux-", {"i-0002": "InService"}, {"i-0003": "Warmed:Stopped"})

    relabelled, warm = (instance_of("linux", row) for row in rows)
    assert (relabelled.name, relabelled.state, relabelled.zone) == (
        "garo-eng-linux-12",
        InstanceState.RUNNING,
        "eu-west-1b",
    )
    assert relabelled.metadata["garo-job"] == "99" and relabelled.labels == {STATE_LABEL: "done"}
    assert (warm.name, warm.state) == ("garo-eng-linux-w-0003", InstanceState.STANDBY)  # the ASG launched it, unnamed
    assert "garo-asg" not in warm.metadata
