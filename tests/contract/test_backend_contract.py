"""One contract, every backend: what the agent may rely on from any cloud.

Each backend is wrapped in a :class:`Harness` that knows how to let time pass,
seed a standby pool, run out of capacity and read what a VM would see in its
metadata, each through that cloud's own stand-in (the local fleet, the
Compute fake validated against compute.v1.json). Adding AWS means adding one
``_aws`` builder below and its name to ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from scaler.backends.aws import AwsBackend, AwsGroup, jit_key
from scaler.backends.base import JIT_KEY, Backend, Failure, InstanceState
from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.backends.local import LocalBackend
from tests.harness.aws import AwsGaps, make_asg, make_bucket
from tests.harness.compute import ComputeFake

GROUP = "linux"


@dataclass
class Harness:
    backend: Backend
    settle: Callable[[], None]  # let boots, resumes and deletions finish
    seed_standby: Callable[[list[str]], None]
    exhaust: Callable[[], None]  # no capacity for new VMs from now on
    metadata: Callable[[str], dict[str, str]]  # what the VM reads from its metadata server


def _local(tmp_path: Path | None) -> Harness:
    now = [1_000.0]
    backend = LocalBackend(tmp_path, boot_delay=30, clock=lambda: now[0])

    def settle() -> None:
        now[0] += 31

    def exhaust() -> None:
        backend.capacity[GROUP] = len(backend.list(GROUP))

    return Harness(
        backend,
        settle,
        lambda names: backend.add_standby(GROUP, names=names) and None,
        exhaust,
        lambda name: backend.get_metadata(GROUP, name),
    )


def _gcp(fake: ComputeFake) -> Harness:
    fake.add_group("garo-eng-linux")
    backend = GcpBackend(
        fake.project,
        fake.region,
        {GROUP: GcpGroup("garo-eng-linux")},
        session=requests.Session(),
        base_url=fake.base_url,
        list_ttl=0,
        sleep=lambda _: None,
    )

    def metadata(name: str) -> dict[str, str]:
        instance = fake.instance("garo-eng-linux", name)
        assert instance is not None and instance.status is not None, f"{name} has no VM"
        return dict(instance.metadata)

    return Harness(
        backend, fake.settle, lambda names: fake.seed("garo-eng-linux", names) and None, fake.exhaust, metadata
    )


def _aws(endpoint: str, aws_clients: Callable[..., object]) -> Harness:
    """AwsBackend on moto over HTTP; warm pool, capacity and ClientToken through AwsGaps (tests/harness/aws.py)."""
    make_asg(aws_clients, "garo-eng-linux", warm_pool=True)
    make_bucket(aws_clients, "garo-eng-jit")
    gaps = AwsGaps(endpoint)
    backend = AwsBackend(
        "eng",
        "eu-west-1",
        {GROUP: AwsGroup("garo-eng-linux", ("m6i.large", "m6a.large"))},
        jit_bucket="garo-eng-jit",
        runner_role_id="AROAEXAMPLERUNNER",
        session=gaps.session(),
        endpoint_url=endpoint,
        list_ttl=0,
        resume_poll=0,
    )
    s3, ec2 = aws_clients("s3"), aws_clients("ec2")

    def settle() -> None:
        backend.list(GROUP)  # what the agent's loop does: attach instances that are running

    def metadata(name: str) -> dict[str, str]:
        """What the boot agent can read: its tags (IMDS) and its own JIT object (S3)."""
        found = [
            i
            for r in ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]  # type: ignore[attr-defined]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        assert len(found) == 1, f"{name} has {len(found)} instances"
        seen = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}
        try:
            body = s3.get_object(Bucket="garo-eng-jit", Key=jit_key(found[0]["InstanceId"], "AROAEXAMPLERUNNER"))  # type: ignore[attr-defined]
            seen[JIT_KEY] = body["Body"].read().decode()
        except s3.exceptions.NoSuchKey:  # type: ignore[attr-defined]
            pass
        return seen

    return Harness(
        backend, settle, lambda names: gaps.seed_warm("garo-eng-linux", names) and None, gaps.exhaust, metadata
    )


BACKENDS = ["local-memory", "local-file", "gcp", "aws"]


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local-memory":
        yield _local(None)
    elif request.param == "local-file":
        yield _local(tmp_path / "fleet")
    elif request.param == "gcp":
        yield _gcp(request.getfixturevalue("compute_fake"))
    else:
        yield _aws(request.getfixturevalue("moto_server"), request.getfixturevalue("aws_clients"))


def names_of(h: Harness) -> list[str]:
    return sorted(i.name for i in h.backend.list(GROUP))


def states(h: Harness) -> dict[str, InstanceState]:
    return {i.name: i.state for i in h.backend.list(GROUP)}


def test_created_names_are_listed_and_boot(harness: Harness) -> None:
    result = harness.backend.create(GROUP, ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    assert sorted(result.created) == ["garo-eng-linux-1", "garo-eng-linux-2"]
    assert result.failed == {}
    assert set(states(harness).values()) == {InstanceState.CREATING}
    harness.settle()
    assert states(harness) == {"garo-eng-linux-1": InstanceState.RUNNING, "garo-eng-linux-2": InstanceState.RUNNING}
    assert all(i.group == GROUP and i.created_at > 0 for i in harness.backend.list(GROUP))


def test_creating_the_same_names_again_does_not_duplicate(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a", "garo-b"], {})
    again = harness.backend.create(GROUP, ["garo-b", "garo-c", "garo-c"], {})
    assert sorted(again.created) == ["garo-b", "garo-c"]
    harness.settle()
    assert names_of(harness) == ["garo-a", "garo-b", "garo-c"]


def test_delete_by_name_ignores_unknown_names(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a", "garo-b"], {})
    harness.settle()
    harness.backend.delete(GROUP, ["garo-a", "garo-never-existed"])
    harness.settle()
    assert names_of(harness) == ["garo-b"]
    harness.backend.delete(GROUP, ["garo-a"])  # already gone: still fine
    assert names_of(harness) == ["garo-b"]


def test_resume_standby_picks_only_standby_and_never_more_than_asked(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-busy"], {})
    harness.seed_standby(["garo-w-1", "garo-w-2", "garo-w-3"])
    harness.settle()
    first = harness.backend.resume_standby(GROUP, 2)
    assert len(first) == 2 and set(first) <= {"garo-w-1", "garo-w-2", "garo-w-3"}
    now = states(harness)
    assert all(now[name] in (InstanceState.RESUMING, InstanceState.RUNNING) for name in first)
    rest = harness.backend.resume_standby(GROUP, 5)
    assert len(rest) == 1 and rest[0] not in first
    assert harness.backend.resume_standby(GROUP, 5) == []
    harness.settle()
    assert set(states(harness).values()) == {InstanceState.RUNNING}


def test_set_metadata_merges_into_what_the_vm_sees(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a"], {"garo-a": {"garo-job": "42"}})
    harness.settle()
    assert harness.metadata("garo-a")["garo-job"] == "42"
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-jit-config": "ZW5jb2RlZA=="})
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-job": "43"})
    seen = harness.metadata("garo-a")
    assert seen["garo-jit-config"] == "ZW5jb2RlZA==" and seen["garo-job"] == "43"


def test_no_capacity_reports_failed_names_and_leaves_nothing_behind(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a"], {})
    harness.exhaust()
    result = harness.backend.create(GROUP, ["garo-b", "garo-c"], {})
    assert result.created == ()
    assert set(result.failed) == {"garo-b", "garo-c"}
    assert {failure.reason for failure in result.failed.values()} == {Failure.CAPACITY}
    harness.settle()
    assert names_of(harness) == ["garo-a"]


def test_invalid_names_are_refused_before_any_cloud_call(harness: Harness) -> None:
    from scaler.backends.base import BackendError

    with pytest.raises(BackendError) as excinfo:
        harness.backend.create(GROUP, ["Garo_Bad"], {})
    assert excinfo.value.retryable is False
    assert excinfo.value.reason is Failure.INVALID
    assert names_of(harness) == []


def test_listing_returns_what_the_vm_was_made_for_but_never_its_jit_config(harness: Harness) -> None:
    """After a restart the agent has only the listing to learn which job and repo a VM is for."""
    facts = {"garo-job": "42", "garo-repo": "octo-org/app"}
    harness.backend.create(GROUP, ["garo-a", "garo-w-1"], {"garo-a": facts, "garo-w-1": {"garo-job": ""}})
    harness.settle()
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-jit-config": "c2VjcmV0LWppdA=="})
    listed = {i.name: i for i in harness.backend.list(GROUP)}
    assert dict(listed["garo-a"].metadata) == facts
    assert listed["garo-w-1"].metadata.get("garo-job", "") == ""
    assert "c2VjcmV0LWppdA==" not in repr(listed)


def test_an_empty_value_removes_the_key_from_what_the_vm_sees(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a"], {"garo-a": {"garo-job": "42"}})
    harness.settle()
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-jit-config": "ZW5jb2RlZA==", "garo-other": "x"})
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-jit-config": ""})
    seen = harness.metadata("garo-a")
    assert "garo-jit-config" not in seen
    assert seen["garo-job"] == "42" and seen["garo-other"] == "x"
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-jit-config": ""})  # already gone: still fine
    assert "garo-jit-config" not in harness.metadata("garo-a")
