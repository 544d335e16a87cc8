"""The AWS agent addresses exactly what the Pulumi program declares: ASGs, tags, the JIT bucket and keys.

Like test_mig_names for GCP, for every group of every AWS example stack: the
ASG names AwsBackend derives (by convention, and from the environment the
scaler instance is deployed with) are the ones Pulumi declares; the tags the
backend lists and launches by are the ones the ASGs propagate; and the runner
role lets a boot agent read and delete exactly the S3 key the backend writes
for its instance, and nothing else.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.aws import permissions
from scaler.agent.settings import load
from scaler.backends.aws import ASG_TAG, BUCKET_TAG, DEPARTMENT_TAG, JIT_PREFIX, AwsBackend, jit_key
from scaler.backends.registry import open_backend
from scaler.config import load_stack_file
from tests.infra.conftest import AWS_STACKS, EXAMPLES, of_type
from tests.infra.iam_eval import Request, allowed

BOOT_AGENT = Path(__file__).resolve().parents[2] / "images" / "garo-runner" / "garo-runner"
FAKE = boto3.Session(region_name="eu-central-1", aws_access_key_id="x", aws_secret_access_key="x")


def scaler_script(capture: dict[str, Any], stack: str) -> str:
    """The scaler instance's user data (a shell script), as the program declares it."""
    [template] = [
        t
        for t in of_type(capture, "ec2/launchTemplate:LaunchTemplate", raw=True)
        if t["name"] == f"{stack}-scaler-template"
    ]
    return base64.b64decode(template["inputs"]["userData"]).decode()


def host_files(capture: dict[str, Any], stack: str) -> dict[str, str]:
    """Every file the user data writes (``cat > <path> <<'GARO_EOF'``), by path."""
    files = {}
    for chunk in scaler_script(capture, stack).split("cat > ")[1:]:
        head, rest = chunk.split(" <<'GARO_EOF'\n", 1)
        files[head] = rest.split("GARO_EOF", 1)[0]
    return files


def deployed_env(capture: dict[str, Any], stack: str, root: Path | None = None) -> dict[str, str]:
    """The scaler container's environment, from the user data of the template the program declares.

    With ``root``, the files the user data writes are written under it, and the env names them there.
    """
    files = host_files(capture, stack)
    env = dict(line.split("=", 1) for line in files["/etc/garo/agent.env"].splitlines())
    if root is not None:
        for path, text in files.items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_text(text)
        env = {k: str(root / v.lstrip("/")) if v in files else v for k, v in env.items()}
    return env


def runner_asgs(capture: dict[str, Any], stack: str) -> dict[str, dict[str, Any]]:
    """Declared runner ASGs by Pulumi resource name (the scaler's own ASG excluded)."""
    return {
        r["name"]: r["inputs"]
        for r in of_type(capture, "autoscaling/group:Group")
        if r["name"] != f"{stack}-scaler-asg"
    }


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_agent_uses_the_asg_names_pulumi_declares(captures: dict[str, Any], stack: str, tmp_path: Path) -> None:
    config = load_stack_file(EXAMPLES / f"Pulumi.{stack}.yaml")
    declared = {name: inputs["name"] for name, inputs in runner_asgs(captures[stack], stack).items()}
    env = deployed_env(captures[stack], stack, tmp_path)
    by_convention = AwsBackend.from_config(config, jit_bucket="b", runner_role_id="r", session=FAKE).groups
    as_deployed = open_backend(config, load(env))
    assert isinstance(as_deployed, AwsBackend)
    for group in config.groups:
        asg = declared[f"{stack}-{group.name}-asg"]
        on_demand = declared.get(f"{stack}-{group.name}-od-asg")
        for backend_group in (by_convention[group.name], as_deployed.groups[group.name]):
            assert (backend_group.asg, backend_group.on_demand_asg) == (asg, on_demand), group.name
            assert backend_group.instance_types == (group.instance_types or (group.machine_type,))
            assert backend_group.spot == group.spot
    addressed = {a for g in as_deployed.groups.values() for a in g.asgs}
    assert addressed == set(declared.values())  # every runner ASG is some group's, and no other
    assert as_deployed.jit_bucket == env["GARO_JIT_BUCKET"] and as_deployed.runner_role_id == env["GARO_RUNNER_ROLE_ID"]


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_asgs_propagate_the_tags_the_backend_lists_and_launches_by(captures: dict[str, Any], stack: str) -> None:
    env = deployed_env(captures[stack], stack)
    for name, inputs in runner_asgs(captures[stack], stack).items():
        tags = {t["key"]: t for t in inputs["tags"]}
        # A warm instance the ASG launches itself is found by garo-asg and finds its bucket by garo-jit-bucket.
        for key, value in ((ASG_TAG, inputs["name"]), (DEPARTMENT_TAG, stack), (BUCKET_TAG, env["GARO_JIT_BUCKET"])):
            assert tags[key]["value"] == value and tags[key]["propagateAtLaunch"] is True, (name, key)
    assert permissions.TAG_KEY == DEPARTMENT_TAG  # the scaler's IAM conditions key on the tag the backend sets


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_a_runner_reads_exactly_the_jit_object_the_backend_writes_for_it(captures: dict[str, Any], stack: str) -> None:
    env = deployed_env(captures[stack], stack)
    bucket, role_id = env["GARO_JIT_BUCKET"], env["GARO_RUNNER_ROLE_ID"]
    [policy] = [
        r for r in of_type(captures[stack], "iam/rolePolicy:RolePolicy") if r["name"] == f"{stack}-runner-policy"
    ]
    document = json.loads(policy["inputs"]["policy"])
    mine, yours = jit_key("i-0aaa", role_id), jit_key("i-0bbb", role_id)
    # An instance profile's session: aws:userid is "<role id>:<instance id>" (what the boot agent keys on).
    context = {"aws:userid": f"{role_id}:i-0aaa"}

    def may(action: str, resource: str) -> bool:
        return allowed(document, Request(action, resource, context))

    for action in ("s3:GetObject", "s3:DeleteObject"):
        assert may(action, f"arn:aws:s3:::{bucket}/{mine}")
        for other in (yours, f"{mine}x", f"{JIT_PREFIX}{role_id}:*", f"{JIT_PREFIX}", "other/" + mine.split("/", 1)[1]):
            assert not may(action, f"arn:aws:s3:::{bucket}/{other}"), (action, other)
        assert not may(action, f"arn:aws:s3:::garo-other-jit/{mine}")
    for action in ("s3:PutObject", "s3:ListBucket", "s3:GetObjectVersion", "s3:PutObjectAcl", "s3:*"):
        assert not may(action, f"arn:aws:s3:::{bucket}/{mine}") and not may(action, f"arn:aws:s3:::{bucket}")
    # Every S3 permission the runner holds is one of the two above.
    s3_actions = {
        a
        for s in document["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
        if a.startswith("s3:")
    }
    assert s3_actions == {"s3:GetObject", "s3:DeleteObject"}
    # The boot agent asks for the same key: s3://<bucket>/jit/<aws:userid>.
    script = BOOT_AGENT.read_text()
    assert f'AWS_JIT_URL="s3://$bucket/{JIT_PREFIX}$userid"' in script


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_the_scaler_writes_but_never_reads_the_jit_objects(captures: dict[str, Any], stack: str) -> None:
    env = deployed_env(captures[stack], stack)
    [policy] = [
        r for r in of_type(captures[stack], "iam/rolePolicy:RolePolicy") if r["name"] == f"{stack}-scaler-policy"
    ]
    document = json.loads(policy["inputs"]["policy"])
    key = f"arn:aws:s3:::{env['GARO_JIT_BUCKET']}/{jit_key('i-0aaa', env['GARO_RUNNER_ROLE_ID'])}"
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert allowed(document, Request(action, key))
    assert not allowed(document, Request("s3:GetObject", key))
