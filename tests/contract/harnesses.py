"""One contract harness per backend in :data:`scaler.backends.registry.BACKENDS`, under the same name.

A harness wraps a backend with what only a test may do to its cloud's stand-in:
let time pass, seed a standby pool, run out of capacity, and read what a VM
sees in its metadata server. ``tests/contract/test_backend_contract.py`` runs
every contract test once per registry entry; an entry with no harness here
fails the suite (it is never skipped).

Shape of an entry (docs/backends.md walks through adding one)::

    def _mycloud(request: pytest.FixtureRequest) -> Harness:
        stand_in = request.getfixturevalue("mycloud_server")   # any fixture of tests/harness/
        backend = MyCloudBackend(..., endpoint=stand_in.url)   # the group GROUP must exist
        return Harness(backend, settle=..., seed_standby=..., exhaust=..., metadata=...)

    HARNESSES["mycloud"] = _mycloud        # or a line in the dict below

A key may also be ``<cloud>:<variant>`` to hold a second shape of the same
backend to the contract (the local fleet in memory as well as on disk); a
variant whose cloud is not in the registry fails the suite too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from scaler.backends.base import Backend, InstanceState
from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.backends.local import LocalBackend

GROUP = "linux"  # the group every harness's backend serves


@dataclass
class Harness:
    backend: Backend
    settle: Callable[[], None]  # let boots, resumes and deletions finish
    seed_standby: Callable[[Sequence[str]], None]  # suspended VMs, as a standby pool built by infra/ would be
    exhaust: Callable[[], None]  # no capacity for new VMs in GROUP from now on
    metadata: Callable[[str], dict[str, str]]  # what the VM reads from its metadata server


HarnessBuilder = Callable[[pytest.FixtureRequest], Harness]


class SeededFleet(LocalBackend):
    """The local fleet plus what infra/ would have made: a standby pool (tests only)."""

    def seed_standby(self, group: str, names: Sequence[str]) -> None:
        with self._fleet() as fleet:
            records = fleet.setdefault(group, {})
            for name in names:
                records.setdefault(name, self._new_record(InstanceState.STANDBY, {}))


def _local(state_dir: Path | None) -> Harness:
    now = [1_000.0]
    backend = SeededFleet(state_dir, boot_delay=30, clock=lambda: now[0])

    def settle() -> None:
        now[0] += 31

    def exhaust() -> None:
        backend.capacity[GROUP] = len(backend.list(GROUP))

    return Harness(
        backend,
        settle,
        lambda names: backend.seed_standby(GROUP, names),
        exhaust,
        lambda name: backend.get_metadata(GROUP, name),
    )


def _local_file(request: pytest.FixtureRequest) -> Harness:
    """The fleet as ``garo agent`` opens it: a JSON file shared by processes."""
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return _local(tmp_path / "fleet")


def _local_memory(request: pytest.FixtureRequest) -> Harness:
    """The fleet the agent's tests use: the same code, kept in memory."""
    return _local(None)


def _gcp(request: pytest.FixtureRequest) -> Harness:
    """A regional MIG on the Compute fake, every request checked against compute.v1.json."""
    from tests.harness.compute import ComputeFake

    fake: ComputeFake = request.getfixturevalue("compute_fake")
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
        """What the VM can read: its instance metadata, and the JIT config the agent holds for it to pull."""
        from scaler.backends.base import JIT_KEY

        instance = fake.instance("garo-eng-linux", name)
        assert instance is not None and instance.status is not None, f"{name} has no VM"
        assert JIT_KEY not in instance.metadata, "a JIT config reached Compute's metadata"
        held = backend.jit_vault.peek(name)
        return dict(instance.metadata) | ({JIT_KEY: held} if held is not None else {})

    def seed_standby(names: Sequence[str]) -> None:
        fake.seed("garo-eng-linux", list(names))

    return Harness(backend, fake.settle, seed_standby, fake.exhaust, metadata)


def _aws(request: pytest.FixtureRequest) -> Harness:
    """AwsBackend on moto over HTTP; warm pool, capacity and ClientToken through AwsGaps (tests/harness/aws.py)."""
    from scaler.backends.aws import AwsBackend, AwsGroup, jit_key
    from scaler.backends.base import JIT_KEY
    from tests.harness.aws import AwsGaps, make_asg, make_bucket

    endpoint: str = request.getfixturevalue("moto_server")
    aws_clients: Callable[..., Any] = request.getfixturevalue("aws_clients")
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
            for r in ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}])["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        assert len(found) == 1, f"{name} has {len(found)} instances"
        seen = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}
        try:
            body = s3.get_object(Bucket="garo-eng-jit", Key=jit_key(found[0]["InstanceId"], "AROAEXAMPLERUNNER"))
            seen[JIT_KEY] = body["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            pass
        return seen

    def seed_standby(names: Sequence[str]) -> None:
        gaps.seed_warm("garo-eng-linux", list(names))

    return Harness(backend, settle, seed_standby, gaps.exhaust, metadata)


# registry name (or "<registry name>:<variant>") -> builder.
HARNESSES: dict[str, HarnessBuilder] = {
    "local": _local_file,
    "local:memory": _local_memory,
    "gcp": _gcp,
    "aws": _aws,
}
