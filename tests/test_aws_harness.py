"""moto in server mode rejects what AWS rejects, and forgets everything between tests."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.harness.aws import REGION, reset_moto


def ami(ec2) -> str:
    return ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_invalid_instance_type_is_rejected(aws_clients) -> None:
    ec2 = aws_clients("ec2")
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami(ec2), InstanceType="m6i.bogus", MinCount=1, MaxCount=1)
    assert error_code(err) == "InvalidInstanceType.NotFound"
    assert ec2.describe_instances()["Reservations"] == []


def test_asg_without_launch_configuration_is_rejected(aws_clients) -> None:
    asg = aws_clients("autoscaling")
    with pytest.raises(ClientError) as missing:
        asg.create_auto_scaling_group(
            AutoScalingGroupName="garo-dep-linux", MinSize=0, MaxSize=2, AvailabilityZones=[f"{REGION}a"]
        )
    with pytest.raises(ClientError) as unknown:
        asg.create_auto_scaling_group(
            AutoScalingGroupName="garo-dep-linux", MinSize=0, MaxSize=2,
            LaunchTemplate={"LaunchTemplateName": "garo-nope"}, AvailabilityZones=[f"{REGION}a"],
        )  # fmt: skip
    assert error_code(missing) == "ValidationError"
    assert error_code(unknown) == "InvalidLaunchTemplateName.NotFoundException"
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_unknown_resources_are_not_found(aws_clients) -> None:
    with pytest.raises(ClientError) as instance:
        aws_clients("ec2").terminate_instances(InstanceIds=["i-0123456789abcdef0"])
    with pytest.raises(ClientError) as parameter:
        aws_clients("ssm").get_parameter(Name="/garo/dep/jit/none", WithDecryption=True)
    with pytest.raises(ClientError) as queue:
        aws_clients("sqs").get_queue_url(QueueName="garo-dep-jobs")
    assert error_code(instance) == "InvalidInstanceID.NotFound"
    assert error_code(parameter) == "ParameterNotFound"
    assert queue.value.response["Error"].get("QueryErrorCode") == "QueueDoesNotExist"


def test_missing_required_parameter_never_reaches_the_server(aws_clients) -> None:
    with pytest.raises(ParamValidationError, match="InstanceIds"):
        aws_clients("ec2").terminate_instances()


def test_asg_lifecycle_and_reset(aws_clients, moto_server: str) -> None:
    ec2, asg = aws_clients("ec2"), aws_clients("autoscaling")
    ec2.create_launch_template(
        LaunchTemplateName="garo-dep-linux", LaunchTemplateData={"ImageId": ami(ec2), "InstanceType": "m6i.large"}
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="garo-dep-linux", MinSize=0, MaxSize=3, DesiredCapacity=2,
        LaunchTemplate={"LaunchTemplateName": "garo-dep-linux"}, AvailabilityZones=[f"{REGION}a"],
    )  # fmt: skip
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["garo-dep-linux"])["AutoScalingGroups"][0]
    assert len(group["Instances"]) == 2
    victim = group["Instances"][0]["InstanceId"]
    asg.terminate_instance_in_auto_scaling_group(InstanceId=victim, ShouldDecrementDesiredCapacity=True)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["garo-dep-linux"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1 and victim not in {i["InstanceId"] for i in group["Instances"]}

    reset_moto(moto_server)
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert ec2.describe_launch_templates()["LaunchTemplates"] == []


def test_each_test_starts_from_an_empty_account(aws_clients) -> None:
    assert aws_clients("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"] == []
    assert aws_clients("ssm").describe_parameters()["Parameters"] == []
