"""GcpBackend against the Compute fake: retries, capacity, batching, caching, never resizing."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from scaler.backends.base import BackendError, Failure, InstanceState
from scaler.backends.gcp import GcpBackend, GcpGroup, mig_name
from scaler.config import parse_stack_config
from tests.harness.compute import ComputeFake

MIG = "garo-eng-linux"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(fake: ComputeFake, clock: Clock, **kwargs: object) -> GcpBackend:
    groups = kwargs.pop("groups", {"linux": GcpGroup(MIG)})
    return GcpBackend(
        fake.project,
        fake.region,
        groups,  # type: ignore[arg-type]
        session=requests.Session(),
        base_url=fake.base_url,
        sleep=clock.sleep,
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def fake(compute_fake: ComputeFake) -> ComputeFake:
    compute_fake.add_group(MIG)
    return compute_fake


def test_429_and_503_are_retried_with_backoff_and_one_request_id(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, backoff=0.5, jitter=lambda: 1.0)
    fake.fail_next(429, 1, "regionInstanceGroupManagers.createInstances")
    fake.fail_next(503, 1, "regionInstanceGroupManagers.createInstances")
    result = backend.create("linux", ["garo-a"], {})
    assert result.created == ("garo-a",)
    creates = [q for method, _, q, _ in fake.requests if method == "regionInstanceGroupManagers.createInstances"]
    assert len(creates) == 3
    assert len({q["requestId"] for q in creates}) == 1  # Compute de-duplicates the retried mutation
    assert clock.sleeps[:2] == [0.5, 1.0]
    assert len(fake.members(MIG)) == 1


def test_each_mutation_gets_its_own_request_id(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock)
    backend.create("linux", ["garo-a"], {})
    backend.create("linux", ["garo-b"], {})
    creates = [q for method, _, q, _ in fake.requests if method == "regionInstanceGroupManagers.createInstances"]
    assert len({q["requestId"] for q in creates}) == 2  # a new mutation is not a retry of the last one


def test_backoff_is_jittered_between_half_and_all_of_the_exponential_delay(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, backoff=0.5)  # the default jitter: random
    fake.fail_next(503, 3, "regionInstanceGroupManagers.listManagedInstances")
    backend.list("linux")
    assert len(clock.sleeps) == 3
    for sleep, delay in zip(clock.sleeps, [0.5, 1.0, 2.0], strict=True):
        assert delay / 2 <= sleep < delay  # never the full delay: agents retrying together spread out
    scripted = make(fake, clock, backoff=0.5, jitter=iter([0.0, 0.5]).__next__)
    clock.sleeps.clear()
    fake.fail_next(503, 2, "regionInstanceGroupManagers.listManagedInstances")
    scripted.list("linux")
    assert clock.sleeps == [0.25, 0.75]


def test_retries_stop_at_the_overall_deadline(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, retries=10, backoff=0.5, deadline=2.0, jitter=lambda: 1.0)
    fake.fail_next(503, 20, "regionInstanceGroupManagers.listManagedInstances")
    with pytest.raises(BackendError) as excinfo:
        backend.list("linux")
    assert excinfo.value.retryable is True and excinfo.value.reason is Failure.UNAVAILABLE
    assert clock.sleeps == [0.5, 1.0]  # a third sleep (2 s) would end past the 2 s deadline: give up instead
    assert fake.calls["regionInstanceGroupManagers.listManagedInstances"] == 3


def test_persistent_5xx_becomes_a_retryable_error(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, retries=3)
    fake.fail_next(503, 10, "regionInstanceGroupManagers.listManagedInstances")
    with pytest.raises(BackendError) as excinfo:
        backend.list("linux")
    assert excinfo.value.retryable is True
    assert fake.calls["regionInstanceGroupManagers.listManagedInstances"] == 4


def test_by_default_a_failing_call_gives_up_within_two_seconds_for_the_next_pass_to_retry(
    fake: ComputeFake, clock: Clock
) -> None:
    """The agent's loop retries from the truth anyway: five retries from 0.5 s held it for up to 15 s.

    Every replica hit by the same Compute errors stalled at once, and finished VMs
    outlived their jobs by more than a reconcile interval (docs/reliability.md, 1 (b)).
    """
    backend = make(fake, clock)
    fake.fail_next(503, 10, "regionInstanceGroupManagers.listManagedInstances")
    with pytest.raises(BackendError) as excinfo:
        backend.list("linux")
    assert excinfo.value.retryable is True
    assert fake.calls["regionInstanceGroupManagers.listManagedInstances"] == 4
    assert sum(clock.sleeps) < 2.0


def test_client_errors_are_final_and_carry_computes_message(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, groups={"linux": GcpGroup("garo-eng-missing")})
    with pytest.raises(BackendError) as excinfo:
        backend.create("linux", ["garo-a"], {})
    assert excinfo.value.retryable is False
    assert "garo-eng-missing" in str(excinfo.value) and "was not found" in str(excinfo.value)
    assert clock.sleeps == []
    with pytest.raises(BackendError, match="unknown runner group"):
        backend.list("windows")


@pytest.mark.parametrize("on_operation", [True, False], ids=["operation-errors", "last-attempt-only"])
def test_capacity_errors_become_failed_names_and_are_cleaned_up(
    fake: ComputeFake, clock: Clock, on_operation: bool
) -> None:
    fake.state.errors_on_operation = on_operation
    backend = make(fake, clock)
    backend.create("linux", ["garo-ok"], {})
    fake.exhaust(code="QUOTA_EXCEEDED")
    result = backend.create("linux", ["garo-x", "garo-y"], {"garo-x": {"garo-jit-config": "c2VjcmV0LWppdA=="}})
    assert set(result.failed) == {"garo-x", "garo-y"} and result.created == ()
    assert {f.reason for f in result.failed.values()} == {Failure.QUOTA}
    assert all(f.detail.startswith("QUOTA_EXCEEDED") for f in result.failed.values())
    assert not any("c2VjcmV0LWppdA==" in str(f) for f in result.failed.values())
    # the stuck creations were deleted, so the MIG will not create them later behind the agent's back
    fake.restore()
    fake.settle()
    assert sorted(fake.members(MIG)) == ["garo-ok"]


def test_capacity_failure_falls_back_to_the_on_demand_mig(fake: ComputeFake, clock: Clock) -> None:
    spot_zone, on_demand_zone = f"{fake.region}-a", f"{fake.region}-b"
    fake.add_group(MIG + "-spot", zones=[spot_zone])
    fake.add_group(MIG + "-od", zones=[on_demand_zone])
    backend = make(fake, clock, groups={"linux": GcpGroup(MIG + "-spot", fallback=MIG + "-od")})
    fake.exhaust(spot_zone)
    result = backend.create("linux", ["garo-a", "garo-b"], {"garo-a": {"garo-job": "7"}})
    assert sorted(result.created) == ["garo-a", "garo-b"] and result.failed == {}
    fake.settle()
    assert sorted(fake.members(MIG + "-od")) == ["garo-a", "garo-b"]
    assert fake.instance(MIG + "-od", "garo-a").metadata["garo-job"] == "7"  # type: ignore[union-attr]
    assert sorted(i.name for i in backend.list("linux")) == ["garo-a", "garo-b"]
    backend.delete("linux", ["garo-a"])
    fake.settle()
    assert sorted(fake.members(MIG + "-od")) == ["garo-b"]


def test_never_resizes(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock)
    fake.seed(MIG, ["garo-w-1", "garo-w-2"])
    backend.create("linux", [f"garo-{n}" for n in range(4)], {})
    fake.settle()
    backend.resume_standby("linux", 1)
    backend.delete("linux", ["garo-0", "garo-1", "garo-w-2", "garo-gone"])
    fake.settle()
    assert fake.calls["regionInstanceGroupManagers.resize"] == 0 and fake.resize_calls == []
    assert sorted(fake.members(MIG)) == ["garo-2", "garo-3", "garo-w-1"]
    (delete,) = [b for m, _, _, b in fake.requests if m == "regionInstanceGroupManagers.deleteInstances"]
    assert delete["skipInstancesOnValidationError"] is True
    assert all("/zones/" in url and "/instances/" in url for url in delete["instances"])


@pytest.mark.parametrize("count", [1, 3, 7])
def test_creates_are_batched_at_the_limit(fake: ComputeFake, clock: Clock, count: int) -> None:
    backend = make(fake, clock, batch_limit=3)
    names = [f"garo-{n}" for n in range(count)]
    assert sorted(backend.create("linux", names, {}).created) == sorted(names)
    bodies = [b for m, _, _, b in fake.requests if m == "regionInstanceGroupManagers.createInstances"]
    assert len(bodies) == math.ceil(count / 3)
    assert sorted(i["name"] for b in bodies for i in b["instances"]) == sorted(names)


def test_list_is_cached_and_own_mutations_invalidate_it(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, list_ttl=5.0)
    lists = lambda: fake.calls["regionInstanceGroupManagers.listManagedInstances"]  # noqa: E731
    assert backend.list("linux") == []
    backend.list("linux")
    assert lists() == 1
    backend.create("linux", ["garo-a"], {})  # reads once before and once after creating
    calls_after_create = lists()
    assert [i.name for i in backend.list("linux")] == ["garo-a"]
    assert lists() == calls_after_create  # the post-create read is reused
    clock.now += 6
    backend.list("linux")
    assert lists() == calls_after_create + 1


def test_concurrent_writers_share_one_listing(fake: ComputeFake, clock: Clock) -> None:
    """The agent writes JIT configs from many threads; listManagedInstances counts against quota."""
    names = [f"garo-c{i}" for i in range(16)]
    fake.seed(MIG, names, status="RUNNING")
    backend = make(fake, clock, list_ttl=5.0)
    fake.latency = 0.05  # every call takes a while, so the threads really overlap
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: backend.set_metadata("linux", name, {"garo-note": name}), names))
    assert all(fake.instance(MIG, n).metadata == {"garo-note": n} for n in names)  # type: ignore[union-attr]
    assert fake.calls["regionInstanceGroupManagers.listManagedInstances"] == 1


def test_set_metadata_retries_on_a_fingerprint_race_and_refuses_unborn_vms(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, list_ttl=0)
    fake.exhaust()
    backend.create("linux", ["garo-late"], {})
    fake.restore()
    fake.seed(MIG, ["garo-a"], status="RUNNING")
    fake.fail_next(412, 1, "instances.setMetadata")
    backend.set_metadata("linux", "garo-a", {"garo-note": "abc"})
    assert fake.instance(MIG, "garo-a").metadata == {"garo-note": "abc"}  # type: ignore[union-attr]
    assert fake.calls["instances.setMetadata"] == 2
    with pytest.raises(BackendError) as excinfo:
        backend.set_metadata("linux", "garo-nobody", {"garo-note": "1"})
    assert excinfo.value.retryable is False


def test_states_and_creation_time_come_from_the_mig(fake: ComputeFake, clock: Clock) -> None:
    backend = make(fake, clock, list_ttl=0, wall_clock=lambda: 1_700_000_000.0)
    fake.seed(MIG, ["garo-w-1"])
    backend.create("linux", ["garo-a"], {"garo-a": {"garo-jit-config": "secret"}})
    listed = {i.name: i for i in backend.list("linux")}
    assert listed["garo-a"].state is InstanceState.CREATING
    assert listed["garo-a"].created_at == 1_700_000_000.0
    assert listed["garo-a"].zone.startswith(fake.region)
    assert listed["garo-w-1"].state is InstanceState.STANDBY
    assert "secret" not in repr(listed["garo-a"])


def test_from_config_maps_groups_to_migs(clock: Clock) -> None:
    config = parse_stack_config(
        {
            "garo:department": "eng",
            "garo:region": "europe-west4",
            "garo:project": "acme-eng",
            "garo:github": {"org": "acme"},
            "garo:network": {"cidr": "10.10.0.0/20"},
            "garo:groups": [
                {"name": "linux", "labels": ["self-hosted", "linux", "eng"]},
                {"name": "gpu", "labels": ["self-hosted", "gpu"], "machineType": "g2-standard-4", "spot": True},
            ],
        }
    )
    backend = GcpBackend.from_config(config, session=requests.Session())
    assert backend.groups["linux"] == GcpGroup(mig_name("eng", "linux"))
    assert backend.groups["gpu"] == GcpGroup("garo-eng-gpu", fallback="garo-eng-gpu-od")


def test_when_the_fallback_also_fails_the_names_are_reported_failed(fake: ComputeFake, clock: Clock) -> None:
    spot_zone, on_demand_zone = f"{fake.region}-a", f"{fake.region}-b"
    fake.add_group(MIG + "-spot", zones=[spot_zone])
    fake.add_group(MIG + "-od", zones=[on_demand_zone])
    backend = make(fake, clock, groups={"linux": GcpGroup(MIG + "-spot", fallback=MIG + "-od")})
    fake.exhaust(spot_zone)
    fake.exhaust(on_demand_zone, code="QUOTA_EXCEEDED")
    result = backend.create("linux", ["garo-a", "garo-b"], {})
    assert result.created == ()
    assert {name: f.detail.split(":")[0] for name, f in result.failed.items()} == {
        "garo-a": "QUOTA_EXCEEDED",
        "garo-b": "QUOTA_EXCEEDED",
    }
    fake.restore()
    fake.settle()
    assert fake.members(MIG + "-spot") == {} and fake.members(MIG + "-od") == {}


def test_a_keep_is_written_to_the_per_instance_config_so_the_listing_shows_it(fake: ComputeFake, clock: Clock) -> None:
    """The MIG listing carries no instance labels: garo-keep must reach preservedStateFromConfig."""
    backend = make(fake, clock, list_ttl=60, wall_clock=lambda: 1_700_000_000.0)
    fake.seed(MIG, ["garo-a"], status="RUNNING")[0].preserved.update({"garo-job": "7", "garo-repo": "octo/app"})
    backend.list("linux")  # cached for a minute: the keep must invalidate it
    backend.set_metadata("linux", "garo-a", {"garo-keep": "1700007200", "garo-note": "8"})
    listed = {i.name: i for i in backend.list("linux")}
    assert listed["garo-a"].metadata == {"garo-job": "7", "garo-repo": "octo/app", "garo-keep": "1700007200"}
    assert fake.calls["regionInstanceGroupManagers.patchPerInstanceConfigs"] == 1
    assert fake.instance(MIG, "garo-a").metadata.get("garo-note") == "8"  # type: ignore[union-attr]


def test_relabelling_a_taken_vm_costs_no_compute_call_and_the_listing_keeps_its_birth_job(
    fake: ComputeFake, clock: Clock
) -> None:
    """The agent relabels a VM another job's runner took; on GCP no listing could show that, so nothing is sent."""
    fake.seed(MIG, ["garo-a"], status="RUNNING")[0].preserved.update({"garo-job": "7", "garo-repo": "octo/app"})
    backend = make(fake, clock, list_ttl=60)
    backend.list("linux")
    before = dict(fake.calls)
    backend.set_metadata("linux", "garo-a", {"garo-jit-config": "", "garo-job": "8"})  # what ClearJit writes
    assert fake.calls == before
    assert {i.name: i.metadata for i in backend.list("linux")}["garo-a"]["garo-job"] == "7"


def test_a_metadata_write_is_two_calls_and_its_operation_is_not_awaited(fake: ComputeFake, clock: Clock) -> None:
    fake.seed(MIG, [f"garo-w-{i}" for i in range(5)], status="RUNNING")
    backend = make(fake, clock, list_ttl=60)
    backend.list("linux")
    before = dict(fake.calls)
    for i in range(5):
        backend.set_metadata("linux", f"garo-w-{i}", {"garo-note": f"{i}"})
    made = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v != before.get(k, 0)}
    # One read for the fingerprint and one write per VM; no zonal operation wait (~2 s and a call each).
    assert made == {"instances.get": 5, "instances.setMetadata": 5}
    assert all(fake.instance(MIG, f"garo-w-{i}").metadata == {"garo-note": f"{i}"} for i in range(5))  # type: ignore[union-attr]
