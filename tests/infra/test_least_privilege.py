"""The scaler's IAM roles hold exactly what its Compute calls need: no less, no more.

Every method of the GCP backend is driven against the Compute fake (create,
including the fall back to the on-demand MIG; delete; list; resume_standby over
suspended and stopped members; set_metadata, including a fingerprint race).
The fake names each request by its method id in Google's discovery document
(compute.v1.json). ``NEEDS`` maps each such id to the IAM permission(s)
Compute's REST reference says it requires ("Authorization requires the
following IAM permission ..."). Then:

* a call the backend makes that ``NEEDS`` does not map fails (map it, and grant it);
* the custom roles the program declares hold exactly the union of what the calls need;
* what can be scoped to the department's names (MIGs, instances) is in the
  name-conditioned role, and only what cannot (operations) is project-wide.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests

from infra.scaler_component import MANAGE_PERMISSIONS, READ_PERMISSIONS
from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.naming import instance_name, mig_name
from tests.harness.compute import ComputeFake
from tests.harness.compute_validator import compute_validator
from tests.infra.conftest import of_type

_MIG_UPDATE = ("compute.instanceGroupManagers.update",)
# Compute method id (compute.v1.json) -> IAM permissions it requires.
NEEDS: dict[str, tuple[str, ...]] = {
    "compute.regionInstanceGroupManagers.listManagedInstances": ("compute.instanceGroupManagers.get",),
    "compute.regionInstanceGroupManagers.createInstances": _MIG_UPDATE,
    "compute.regionInstanceGroupManagers.deleteInstances": _MIG_UPDATE,
    "compute.regionInstanceGroupManagers.resumeInstances": _MIG_UPDATE,
    "compute.regionInstanceGroupManagers.startInstances": _MIG_UPDATE,
    "compute.instances.get": ("compute.instances.get",),
    "compute.instances.setMetadata": ("compute.instances.setMetadata",),
    "compute.regionOperations.wait": ("compute.regionOperations.get",),
    # Not called: setMetadata's zonal operation is not awaited (a later listing shows its outcome).
    "compute.zoneOperations.wait": ("compute.zoneOperations.get",),
}
# IAM checks these on the operation, whose name no condition on garo-<dept>- can match.
PROJECT_WIDE = {"compute.regionOperations.get", "compute.zoneOperations.get"}
DEPT = "eng"


class Recorder:
    """Which Compute methods each backend method called (the fake counts every validated request)."""

    def __init__(self, fake: ComputeFake) -> None:
        self.fake = fake
        self.by_backend_method: dict[str, set[str]] = {}

    def __call__(self, backend_method: str, call: Any) -> Any:
        before = Counter(self.fake.calls)
        result = call()
        called = {f"compute.{m}" for m in (self.fake.calls - before)}
        self.by_backend_method.setdefault(backend_method, set()).update(called)
        return result


def drive_every_backend_method(fake: ComputeFake) -> dict[str, set[str]]:
    linux, spot = mig_name(DEPT, "linux"), mig_name(DEPT, "spot")
    spot_zone, on_demand_zone = fake.zones[0], fake.zones[1]
    fake.add_group(linux)
    fake.add_group(spot, zones=[spot_zone])
    fake.add_group(mig_name(DEPT, "spot", True), zones=[on_demand_zone])
    backend = GcpBackend(
        fake.project,
        fake.region,
        {"linux": GcpGroup(linux), "spot": GcpGroup(spot, fallback=mig_name(DEPT, "spot", True))},
        session=requests.Session(),
        base_url=fake.base_url,
        list_ttl=0,
        sleep=lambda _: None,
    )
    record = Recorder(fake)
    job, spot_job = instance_name(DEPT, "linux", 1), instance_name(DEPT, "spot", 2)
    record("create", lambda: backend.create("linux", [job], {job: {"garo-job": "1"}}))
    fake.exhaust(spot_zone)
    made = record("create", lambda: backend.create("spot", [spot_job], {}))
    fake.restore()
    assert made.created == (spot_job,) and fake.instance(mig_name(DEPT, "spot", True), spot_job), "no fallback"
    record("list", lambda: backend.list("linux"))
    record("list", lambda: backend.list("spot"))
    fake.seed(linux, [f"garo-{DEPT}-linux-w-0"], status="SUSPENDED")
    fake.seed(linux, [f"garo-{DEPT}-linux-w-1"], status="TERMINATED")
    assert len(record("resume_standby", lambda: backend.resume_standby("linux", 2))) == 2
    fake.settle()
    fake.fail_next(412, 1, "instances.setMetadata")
    # A JIT config is held in memory (no call); garo-job still goes to the instance (a warm VM took a job).
    record("set_metadata", lambda: backend.set_metadata("linux", job, {"garo-jit-config": "x", "garo-note": "1"}))
    record("delete", lambda: backend.delete("linux", [job]))
    record("delete", lambda: backend.delete("spot", [spot_job]))
    fake.settle()
    assert not fake.members(mig_name(DEPT, "spot", True)), "delete did not reach the fallback MIG"
    return record.by_backend_method


@pytest.fixture
def calls(compute_fake: ComputeFake) -> dict[str, set[str]]:
    found = drive_every_backend_method(compute_fake)
    # Every path the test claims to drive did reach Compute.
    assert "compute.regionInstanceGroupManagers.resumeInstances" in found["resume_standby"]
    assert "compute.regionInstanceGroupManagers.startInstances" in found["resume_standby"]
    assert "compute.instances.setMetadata" in found["set_metadata"]
    return found


def test_the_permission_table_names_real_compute_methods() -> None:
    known = {m.id for m in compute_validator().methods}
    assert set(NEEDS) <= known, sorted(set(NEEDS) - known)


def test_every_call_the_backend_makes_has_its_permission_mapped(calls: dict[str, set[str]]) -> None:
    unmapped = {method: sorted(called - set(NEEDS)) for method, called in calls.items() if called - set(NEEDS)}
    assert not unmapped, f"Compute calls without a permission in NEEDS (map them and grant them): {unmapped}"


def test_the_scaler_roles_hold_exactly_what_the_calls_need(calls: dict[str, set[str]]) -> None:
    needed = {p for called in calls.values() for method in called for p in NEEDS.get(method, ())}
    granted = set(MANAGE_PERMISSIONS) | set(READ_PERMISSIONS)
    assert not needed - granted, f"needed but not granted: {sorted(needed - granted)}"
    assert not granted - needed, f"granted but no call needs it: {sorted(granted - needed)}"
    # Least privilege also means: scoped to garo-<dept>- names wherever IAM can scope it.
    assert set(READ_PERMISSIONS) == needed & PROJECT_WIDE
    assert set(MANAGE_PERMISSIONS) == needed - PROJECT_WIDE


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_the_declared_custom_roles_are_those_lists(captures: dict[str, Any], stack: str) -> None:
    roles = {r["inputs"]["title"]: set(r["inputs"]["permissions"]) for r in of_type(captures[stack], "IAMCustomRole")}
    assert sorted(roles.values(), key=len) == sorted([set(READ_PERMISSIONS), set(MANAGE_PERMISSIONS)], key=len)
