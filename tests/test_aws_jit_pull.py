"""AWS's pull path: an instance trades its signed identity document for its JIT config at the agent, once.

moto signs no identity documents (it serves no IMDS at all), so these tests
sign documents with their own RSA key and hand the agent that key's
certificate, as an operator hands it AWS's published certificate for the
region (docs/testing.md). The instances, their ids and the calls the backend
makes are moto's, over HTTP.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from scaler.agent.jit_endpoint import PATH, jit_app
from scaler.backends.aws import AGENT_URL_TAG, AwsBackend, AwsGroup
from scaler.backends.aws_identity import AwsIdentityVerifier
from scaler.backends.base import JIT_KEY
from scaler.backends.jit_vault import Refused
from tests.harness.aws import REGION, AwsGaps, garo_name, make_asg, make_bucket
from tests.harness.iid import Signer

ASG, BUCKET, ROLE = "garo-eng-linux", "garo-eng-jit", "AROAEXAMPLERUNNER"
AGENT_URL = "http://10.20.0.5:8780"
CONFIG = "eyJqaXQiOiAic2VjcmV0In0="


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


class Rig:
    def __init__(self, endpoint: str, clients: Callable[..., Any], signer: Signer) -> None:
        make_asg(clients, ASG, max_size=5)
        make_bucket(clients, BUCKET)
        self.gaps = AwsGaps(endpoint)
        self.ec2, self.s3 = clients("ec2"), clients("s3")
        self.backend = AwsBackend(
            "eng",
            REGION,
            {"linux": AwsGroup(ASG, ("m6i.large",))},
            jit_bucket=BUCKET,
            runner_role_id=ROLE,
            session=self.gaps.session(),
            endpoint_url=endpoint,
            list_ttl=0,
            agent_url=AGENT_URL,
        )
        self.signer = signer
        self.account = self.backend.account_id()
        verifier = AwsIdentityVerifier(self.account, REGION, signer.certificate, self.backend.instance_name)
        self.client = jit_app(self.backend.jit_vault, verifier).test_client()

    def instance(self, name: str) -> dict[str, Any]:
        filters = [{"Name": "tag:garo-asg", "Values": [ASG]}]
        found: list[dict[str, Any]] = [
            i
            for r in self.ec2.describe_instances(Filters=filters)["Reservations"]
            for i in r["Instances"]
            if garo_name(i) == name
        ]
        assert len(found) == 1
        return found[0]

    def pull(self, token: str) -> Any:
        return self.client.post(PATH, headers={"Authorization": f"Bearer {token}"})

    def operations(self) -> list[str]:
        return [op for op, _ in self.gaps.requests]


@pytest.fixture
def rig(moto_server: str, aws_clients: Callable[..., Any], signer: Signer) -> Rig:
    return Rig(moto_server, aws_clients, signer)


def test_a_config_costs_no_aws_call_and_goes_once_to_the_instance_that_proves_itself(rig: Rig) -> None:
    rig.backend.create("linux", ["garo-eng-linux-1"], {})
    instance = rig.instance("garo-eng-linux-1")
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[AGENT_URL_TAG] == AGENT_URL  # how the boot agent finds the endpoint
    before = len(rig.gaps.requests)
    rig.backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    assert rig.gaps.requests[before:] == []  # no PutObject, not even a listing
    assert rig.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0

    token = rig.signer.token(rig.signer.document(instance["InstanceId"], account=rig.account))
    first = rig.pull(token)
    assert first.status_code == 200 and first.get_data(as_text=True) == CONFIG
    assert first.headers["Cache-Control"] == "no-store"
    assert rig.pull(token).status_code == 410  # a copy of the document, after the instance took its config


def test_a_forged_or_foreign_document_gets_nothing_and_the_config_stays(rig: Rig) -> None:
    rig.backend.create("linux", ["garo-eng-linux-1"], {})
    iid = rig.instance("garo-eng-linux-1")["InstanceId"]
    rig.backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    document = rig.signer.document(iid, account=rig.account)
    token = rig.signer.token(document)
    forged_doc = document.replace(b'"m6i.large"', b'"m6i.xlarge"')
    forged = base64.b64encode(forged_doc).decode() + "." + token.split(".", 1)[1]
    other_key = Signer().token(document)  # signed, but not by the region's key
    assert rig.pull(forged).status_code == 401
    assert rig.pull(other_key).status_code == 401
    assert rig.pull("not-a-document").status_code == 401
    assert rig.pull(rig.signer.token(rig.signer.document(iid, account="210987654321"))).status_code == 403
    assert (
        rig.pull(rig.signer.token(rig.signer.document(iid, account=rig.account, region="us-west-2"))).status_code == 403
    )
    stranger = rig.signer.token(rig.signer.document("i-0123456789abcdef0", account=rig.account))
    assert rig.pull(stranger).status_code == 403  # a real instance of the account, not one of ours
    assert rig.backend.jit_vault.peek("garo-eng-linux-1") == CONFIG
    assert rig.pull(token).status_code == 200


def test_an_instance_started_before_the_agent_asked_for_it_is_refused(rig: Rig) -> None:
    rig.backend.create("linux", ["garo-eng-linux-1"], {})
    iid = rig.instance("garo-eng-linux-1")["InstanceId"]
    rig.backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    old = rig.signer.token(rig.signer.document(iid, account=rig.account, pending=time.time() - 3600))
    assert rig.pull(old).status_code == 403
    assert rig.backend.jit_vault.peek("garo-eng-linux-1") == CONFIG


def test_an_unread_config_dies_with_its_instance_and_a_spent_one_costs_no_call(rig: Rig) -> None:
    rig.backend.create("linux", ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    iid = rig.instance("garo-eng-linux-2")["InstanceId"]
    rig.backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    rig.backend.set_metadata("linux", "garo-eng-linux-2", {JIT_KEY: CONFIG})
    before = len(rig.gaps.requests)
    rig.backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: ""})  # spent: cleared
    assert rig.gaps.requests[before:] == []
    rig.backend.delete("linux", ["garo-eng-linux-2"])
    assert len(rig.backend.jit_vault) == 0
    assert "DeleteObjects" not in rig.operations() and "PutObject" not in rig.operations()
    token = rig.signer.token(rig.signer.document(iid, account=rig.account))
    assert rig.pull(token).status_code in (403, 404)


def test_each_instance_of_a_batch_gets_its_own_config_and_no_other(rig: Rig) -> None:
    """One RunInstances for three names: the endpoint tells the instances apart by their ids."""
    names = ["garo-eng-linux-1", "garo-eng-linux-2", "garo-eng-linux-3"]
    rig.backend.create("linux", names, {})
    assert [op for op in rig.operations() if op == "RunInstances"] == ["RunInstances"]
    configs = {name: f"{CONFIG}-{name[-1]}" for name in names}
    for name in names[:2]:
        rig.backend.set_metadata("linux", name, {JIT_KEY: configs[name]})
    tokens = {
        n: rig.signer.token(rig.signer.document(rig.instance(n)["InstanceId"], account=rig.account)) for n in names
    }
    assert rig.pull(tokens["garo-eng-linux-3"]).status_code == 404  # its config is not ready: nobody else's
    for name in names[:2]:
        answer = rig.pull(tokens[name])
        assert answer.status_code == 200 and answer.get_data(as_text=True) == configs[name]


def test_an_instance_listed_by_another_agent_process_is_known_after_a_listing(
    rig: Rig, moto_server: str, signer: Signer
) -> None:
    """A restarted agent learns ids from its listing; the config it holds then goes to the right instance."""
    rig.backend.create("linux", ["garo-eng-linux-1"], {})
    iid = rig.instance("garo-eng-linux-1")["InstanceId"]
    fresh = AwsBackend(
        "eng", REGION, {"linux": AwsGroup(ASG, ("m6i.large",))}, jit_bucket=BUCKET, runner_role_id=ROLE,
        session=rig.gaps.session(), endpoint_url=moto_server, list_ttl=0, agent_url=AGENT_URL,
    )  # fmt: skip
    verifier = AwsIdentityVerifier(rig.account, REGION, signer.certificate, fresh.instance_name)
    token = signer.token(signer.document(iid, account=rig.account))
    with pytest.raises(Refused) as refused:
        verifier.verify(token)
    assert refused.value.status == 403
    fresh.list("linux")
    assert verifier.verify(token).instance_name == "garo-eng-linux-1"


def test_without_an_agent_url_the_config_still_travels_through_s3(rig: Rig, moto_server: str) -> None:
    """A new image under an old stack: the S3 fallback, as before."""
    backend = AwsBackend(
        "eng", REGION, {"linux": AwsGroup(ASG, ("m6i.large",))}, jit_bucket=BUCKET, runner_role_id=ROLE,
        session=rig.gaps.session(), endpoint_url=moto_server, list_ttl=0,
    )  # fmt: skip
    backend.create("linux", ["garo-eng-linux-1"], {})
    assert AGENT_URL_TAG not in {t["Key"] for t in rig.instance("garo-eng-linux-1")["Tags"]}
    backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    assert rig.s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1
    assert len(backend.jit_vault) == 0


def test_the_certificate_must_be_an_rsa_pem_certificate() -> None:
    with pytest.raises(ValueError, match="PEM"):
        AwsIdentityVerifier("123456789012", REGION, "not a certificate", lambda _: None)


def _agent_env(moto_server: str, **extra: str) -> dict[str, str]:
    from tests.test_aws_backend import _aws_stack

    return {
        "GARO_STACK_CONFIG": _aws_stack(),
        "GARO_JIT_BUCKET": BUCKET,
        "GARO_RUNNER_ROLE_ID": ROLE,
        "GARO_AWS_ASGS": json.dumps({"linux": {"asg": ASG}}),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **extra,
    }


def test_the_agent_on_aws_serves_its_endpoint_when_given_a_url_and_the_certificate(
    moto_server: str, aws_clients: Callable[..., Any], signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaler.agent.cli import open_backend
    from scaler.agent.jit_endpoint import start_for
    from scaler.agent.settings import load

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    make_asg(aws_clients, ASG, max_size=5)
    pem = tmp_path / "aws-rsa.pem"
    pem.write_text(signer.certificate)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = _agent_env(moto_server, GARO_JIT_URL=AGENT_URL, GARO_JIT_PORT=str(port), GARO_JIT_AWS_CERT_FILE=str(pem))
    settings = load(env)
    backend = open_backend(settings)
    assert isinstance(backend, AwsBackend) and backend.agent_url == AGENT_URL
    backend.create("linux", ["garo-eng-linux-1"], {})
    backend.set_metadata("linux", "garo-eng-linux-1", {JIT_KEY: CONFIG})
    [iid] = [i["InstanceId"] for r in aws_clients("ec2").describe_instances()["Reservations"] for i in r["Instances"]]
    server = start_for(backend, settings)
    assert server is not None
    try:
        token = signer.token(signer.document(iid, account=backend.account_id()))
        answer = requests.post(
            f"http://127.0.0.1:{port}{PATH}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200 and answer.text == CONFIG


def test_the_agent_on_aws_refuses_a_url_without_a_certificate_and_serves_nothing_without_a_url(
    moto_server: str, tmp_path: Path
) -> None:
    import click

    from scaler.agent.cli import open_backend
    from scaler.agent.jit_endpoint import start_for
    from scaler.agent.settings import SettingsError, load

    settings = load(_agent_env(moto_server, GARO_JIT_URL=AGENT_URL))
    with pytest.raises(click.ClickException, match="GARO_JIT_AWS_CERT_FILE"):
        start_for(open_backend(settings), settings)
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(SettingsError, match="GARO_JIT_AWS_CERT_FILE"):
        load(_agent_env(moto_server, GARO_JIT_URL=AGENT_URL, GARO_JIT_AWS_CERT_FILE=str(tmp_path / "empty.pem")))
    plain = load(_agent_env(moto_server))
    backend = open_backend(plain)
    assert isinstance(backend, AwsBackend) and backend.agent_url == ""  # an older stack: S3
    assert start_for(backend, plain) is None


def test_an_instance_without_the_agent_url_tag_gets_its_config_through_s3(
    rig: Rig, aws_clients: Callable[..., Any]
) -> None:
    """An instance without the agent's URL (launched under an older stack): its boot agent reads S3, so the config goes there."""
    subnet = (
        aws_clients("autoscaling")
        .describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]["VPCZoneIdentifier"]
        .split(",")[0]
    )
    ami = aws_clients("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    launched = aws_clients("ec2").run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, InstanceType="m6i.large", SubnetId=subnet,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Name", "Value": "garo-eng-linux-9"}, {"Key": "garo-asg", "Value": ASG},
        ]}],
    )["Instances"][0]  # fmt: skip
    rig.backend.set_metadata("linux", "garo-eng-linux-9", {JIT_KEY: CONFIG})
    assert len(rig.backend.jit_vault) == 0
    [key] = [o["Key"] for o in rig.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert key.endswith(launched["InstanceId"])
    rig.backend.delete("linux", ["garo-eng-linux-9"])
    assert rig.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_an_instance_the_asg_launched_with_the_deployed_tags_pulls_from_the_agent(
    rig: Rig, aws_clients: Callable[..., Any]
) -> None:
    """infra/aws tags every runner ASG with garo-agent-url, propagated at launch: its own launches pull, no S3."""
    autoscaling = aws_clients("autoscaling")
    declared = {"garo-asg": ASG, "garo-department": "eng", "garo-jit-bucket": BUCKET, AGENT_URL_TAG: AGENT_URL}
    autoscaling.create_or_update_tags(
        Tags=[
            {"ResourceId": ASG, "ResourceType": "auto-scaling-group", "Key": k, "Value": v, "PropagateAtLaunch": True}
            for k, v in declared.items()
        ]
    )
    autoscaling.set_desired_capacity(AutoScalingGroupName=ASG, DesiredCapacity=1)  # the ASG launches, not the agent
    [row] = rig.backend.list("linux")
    [instance] = [
        i
        for r in rig.ec2.describe_instances(Filters=[{"Name": "tag:garo-asg", "Values": [ASG]}])["Reservations"]
        for i in r["Instances"]
    ]
    instance_id = instance["InstanceId"]
    assert row.name.endswith("w-" + instance_id.removeprefix("i-"))  # no Garo name: the ASG made it
    assert {t["Key"]: t["Value"] for t in instance["Tags"]}[AGENT_URL_TAG] == AGENT_URL
    before = len(rig.gaps.requests)
    rig.backend.set_metadata("linux", row.name, {JIT_KEY: CONFIG})
    assert "PutObject" not in [op for op, _ in rig.gaps.requests[before:]]  # one listing, then held in memory
    assert rig.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    token = rig.signer.token(rig.signer.document(instance_id, account=rig.account))
    pulled = rig.pull(token)
    assert pulled.status_code == 200 and pulled.get_data(as_text=True) == CONFIG
