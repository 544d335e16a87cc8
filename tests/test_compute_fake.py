"""The Compute fake refuses what Compute refuses, and accepts what Google's own client sends.

If the fake accepted anything, every GCP backend test would prove nothing. These
tests pin the fake's strictness (schema, parameters, methods, fingerprints) and
its behaviour (operations, capacity errors, what a resize down does).
"""

from __future__ import annotations

from typing import Any

import httplib2
import pytest
import requests
from googleapiclient import discovery

from tests.harness.compute import ComputeFake
from tests.harness.compute_validator import DISCOVERY_PATH


def mig_url(fake: ComputeFake, mig: str = "g1") -> str:
    return f"{fake.base_url}/projects/{fake.project}/regions/{fake.region}/instanceGroupManagers/{mig}"


def op_url(fake: ComputeFake, name: str) -> str:
    return f"{fake.base_url}/projects/{fake.project}/regions/{fake.region}/operations/{name}"


def assert_compute_error(response: requests.Response, status: int, reason: str, *needles: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["errors"][0]["reason"] == reason
    for needle in needles:
        assert needle in error["message"]


@pytest.fixture
def fake(compute_fake: ComputeFake) -> ComputeFake:
    compute_fake.add_group("g1")
    return compute_fake


def test_unknown_field_in_create_instances_body_is_rejected_and_changes_nothing(fake: ComputeFake) -> None:
    response = requests.post(mig_url(fake) + "/createInstances", json={"instances": [{"name": "a", "metadata": {}}]})
    assert_compute_error(response, 400, "invalid", 'Unknown name "metadata"', "instances[0]")
    assert fake.members("g1") == {}


def test_nested_schema_types_and_enums_are_checked(fake: ComputeFake) -> None:
    bad_enum = requests.post(mig_url(fake) + "/createInstances", json={"instances": [{"name": "a", "status": "BOGUS"}]})
    assert_compute_error(bad_enum, 400, "invalid", "TYPE_ENUM", "instances[0].status")
    bad_map = {"instances": [{"name": "a", "preservedState": {"metadata": {"k": 5}}}]}
    assert_compute_error(requests.post(mig_url(fake) + "/createInstances", json=bad_map), 400, "invalid", "TYPE_STRING")
    not_a_list = requests.post(mig_url(fake) + "/deleteInstances", json={"instances": "zones/x/instances/a"})
    assert_compute_error(not_a_list, 400, "invalid", "Expected a list")
    assert fake.members("g1") == {}


def test_query_parameters_are_checked(fake: ComputeFake) -> None:
    assert_compute_error(requests.post(mig_url(fake) + "/resize"), 400, "required", "'size'")
    assert_compute_error(requests.post(mig_url(fake) + "/resize", params={"size": "two"}), 400, "invalid", "TYPE_INT32")
    unknown = requests.post(mig_url(fake) + "/listManagedInstances", params={"pageSize": "5"})
    assert_compute_error(unknown, 400, "invalid", '"pageSize"')
    bad_project = requests.get(f"{fake.base_url}/projects/Bad_Project/regions/{fake.region}/instanceGroupManagers/g1")
    assert_compute_error(bad_project, 400, "invalid", "project")
    assert fake.resize_calls == []


def test_wrong_method_and_unknown_path(fake: ComputeFake) -> None:
    assert_compute_error(requests.get(mig_url(fake) + "/createInstances"), 405, "methodNotAllowed", "POST")
    assert_compute_error(requests.post(mig_url(fake) + "/scaleDown", json={}), 404, "notFound")
    assert_compute_error(requests.get(fake.base_url.replace("/v1", "/v2") + "/projects/p"), 404, "notFound")


def test_google_client_requests_are_accepted(fake: ComputeFake) -> None:
    """Requests built by google-api-python-client from the same document pass the validator."""
    service = discovery.build_from_document(
        DISCOVERY_PATH.read_text(), http=httplib2.Http(), client_options={"api_endpoint": fake.base_url + "/"}
    )
    migs = service.regionInstanceGroupManagers()
    where = {"project": fake.project, "region": fake.region, "instanceGroupManager": "g1"}
    body = {"instances": [{"name": "garo-a", "preservedState": {"metadata": {"garo-job": "1"}}}]}
    op = migs.createInstances(**where, body=body, requestId="7f6c1a4e-0000-4000-8000-000000000000").execute()
    done = service.regionOperations().wait(project=fake.project, region=fake.region, operation=op["name"]).execute()
    assert done["status"] == "DONE" and "error" not in done
    listed = migs.listManagedInstances(**where, maxResults=10).execute()
    assert [m["name"] for m in listed["managedInstances"]] == ["garo-a"]


def test_operations_go_pending_running_done(fake: ComputeFake) -> None:
    op = requests.post(mig_url(fake) + "/createInstances", json={"instances": [{"name": "a"}]}).json()
    assert op["status"] == "PENDING"
    assert requests.get(op_url(fake, op["name"])).json()["status"] == "RUNNING"
    assert requests.get(op_url(fake, op["name"])).json()["status"] == "DONE"
    assert_compute_error(requests.get(op_url(fake, "operation-nope")), 404, "notFound")


def test_capacity_errors_surface_on_operation_and_managed_instance(fake: ComputeFake) -> None:
    fake.exhaust()
    op = requests.post(mig_url(fake) + "/createInstances", json={"instances": [{"name": "a"}, {"name": "b"}]}).json()
    done = requests.post(op_url(fake, op["name"]) + "/wait").json()
    assert [e["code"] for e in done["error"]["errors"]] == ["ZONE_RESOURCE_POOL_EXHAUSTED"] * 2
    rows = requests.post(mig_url(fake) + "/listManagedInstances").json()["managedInstances"]
    for row in rows:
        assert row["currentAction"] == "CREATING" and "instanceStatus" not in row
        assert row["lastAttempt"]["errors"]["errors"][0]["code"] == "ZONE_RESOURCE_POOL_EXHAUSTED"
    fake.restore()  # the MIG keeps retrying and succeeds once capacity is back
    fake.settle()
    assert {m.status for m in fake.members("g1").values()} == {"RUNNING"}


def test_one_exhausted_zone_only_moves_instances_elsewhere(fake: ComputeFake) -> None:
    fake.exhaust(f"{fake.region}-a")
    requests.post(mig_url(fake) + "/createInstances", json={"instances": [{"name": f"i{n}"} for n in range(4)]})
    fake.settle()
    assert {m.zone for m in fake.members("g1").values()} == {f"{fake.region}-b", f"{fake.region}-c"}


def test_stale_metadata_fingerprint_is_refused(fake: ComputeFake) -> None:
    (instance,) = fake.seed("g1", ["a"], status="RUNNING")
    url = f"{fake.base_url}/projects/{fake.project}/zones/{instance.zone}/instances/a"
    current = requests.get(url).json()["metadata"]
    stale = {"fingerprint": "0000", "items": [{"key": "garo-job", "value": "1"}]}
    assert_compute_error(requests.post(url + "/setMetadata", json=stale), 412, "conditionNotMet", "fingerprint")
    assert fake.instance("g1", "a").metadata == {}  # type: ignore[union-attr]
    fresh = {"fingerprint": current["fingerprint"], "items": [{"key": "garo-job", "value": "1"}]}
    assert requests.post(url + "/setMetadata", json=fresh).status_code == 200
    assert fake.instance("g1", "a").metadata == {"garo-job": "1"}  # type: ignore[union-attr]
    # the old fingerprint is now stale too
    assert requests.post(url + "/setMetadata", json=fresh).status_code == 412
    labels = {"labels": {"garo-job": "1"}, "labelFingerprint": "stale"}
    assert_compute_error(requests.post(url + "/setLabels", json=labels), 412, "conditionNotMet")


def test_delete_instances_membership_rules(fake: ComputeFake) -> None:
    (instance,) = fake.seed("g1", ["a"], status="RUNNING")
    outsider = f"zones/{instance.zone}/instances/not-a-member"
    strict = requests.post(mig_url(fake) + "/deleteInstances", json={"instances": [outsider]})
    assert_compute_error(strict, 400, "invalid", "not a member")
    malformed = requests.post(
        mig_url(fake) + "/deleteInstances", json={"instances": ["a"], "skipInstancesOnValidationError": True}
    )
    assert_compute_error(malformed, 400, "invalid", "malformed")
    body: dict[str, Any] = {
        "instances": [outsider, f"zones/{instance.zone}/instances/a"],
        "skipInstancesOnValidationError": True,
    }
    assert requests.post(mig_url(fake) + "/deleteInstances", json=body).status_code == 200
    fake.settle()
    assert fake.members("g1") == {}


def test_resume_only_accepts_suspended_and_resize_down_picks_victims(fake: ComputeFake) -> None:
    running, suspended = fake.seed("g1", ["busy"], status="RUNNING")[0], fake.seed("g1", ["idle"])[0]
    wrong = requests.post(
        mig_url(fake) + "/resumeInstances", json={"instances": [f"zones/{running.zone}/instances/busy"]}
    )
    assert_compute_error(wrong, 400, "invalid", "busy")
    ok = requests.post(
        mig_url(fake) + "/resumeInstances", json={"instances": [f"zones/{suspended.zone}/instances/idle"]}
    )
    assert ok.status_code == 200
    fake.settle()
    assert fake.instance("g1", "idle").status == "RUNNING"  # type: ignore[union-attr]
    requests.post(mig_url(fake) + "/resize", params={"size": "1"})
    fake.settle()
    assert len(fake.members("g1")) == 1  # the MIG chose which VM to kill, not the caller
    assert fake.resize_calls == [("g1", 2, 1)]


def test_paging_faults_and_counters(fake: ComputeFake) -> None:
    fake.seed("g1", [f"i{n}" for n in range(5)], status="RUNNING")
    first = requests.post(mig_url(fake) + "/listManagedInstances", params={"maxResults": "3"}).json()
    assert len(first["managedInstances"]) == 3
    rest = requests.post(mig_url(fake) + "/listManagedInstances", params={"pageToken": first["nextPageToken"]}).json()
    assert len(rest["managedInstances"]) == 2 and "nextPageToken" not in rest
    fake.fail_next(429, 2, "regionInstanceGroupManagers.get")
    assert_compute_error(requests.get(mig_url(fake)), 429, "rateLimitExceeded")
    assert requests.get(mig_url(fake)).status_code == 429
    assert requests.get(mig_url(fake)).json()["targetSize"] == 5
    assert fake.calls["regionInstanceGroupManagers.get"] == 3
    assert fake.calls["regionInstanceGroupManagers.listManagedInstances"] == 2


def test_zonal_groups_and_unimplemented_methods(compute_fake: ComputeFake) -> None:
    zone = f"{compute_fake.region}-b"
    compute_fake.add_group("z1", zonal=zone)
    base = f"{compute_fake.base_url}/projects/{compute_fake.project}/zones/{zone}/instanceGroupManagers/z1"
    op = requests.post(base + "/createInstances", json={"instances": [{"name": "a"}]}).json()
    assert op["zone"].endswith(f"/zones/{zone}")
    compute_fake.settle()
    assert compute_fake.instance("z1", "a").zone == zone  # type: ignore[union-attr]
    valid_but_unused = requests.post(base + "/abandonInstances", json={"instances": []})
    assert_compute_error(valid_but_unused, 501, "notImplemented")
