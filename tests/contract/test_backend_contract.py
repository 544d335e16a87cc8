"""One contract, every backend: what the agent may rely on from any cloud.

The suite runs once per entry of :data:`scaler.backends.registry.BACKENDS`,
each through its harness in ``tests/contract/harnesses.py`` (same name), which
drives that cloud's stand-in: the local fleet, the Compute fake validated
against compute.v1.json, ... A registered backend without a harness fails
here. Nothing in this file names a cloud or a cloud's error code: failures are
:class:`scaler.backends.base.Failure` reasons (docs/backends.md).
"""

from __future__ import annotations

import pytest

from scaler.backends import registry
from scaler.backends.base import BackendError, Failure, InstanceState
from tests.contract.harnesses import GROUP, HARNESSES, Harness


def contract_names() -> list[str]:
    """Every registered backend, and every harness (a harness must belong to a registered backend)."""
    return sorted(set(registry.BACKENDS) | set(HARNESSES))


@pytest.fixture(params=contract_names())
def harness(request: pytest.FixtureRequest) -> Harness:
    name: str = request.param
    cloud = name.split(":", 1)[0]
    if cloud not in registry.BACKENDS:
        pytest.fail(f"harness {name!r} belongs to no backend in scaler.backends.registry.BACKENDS")
    if name not in HARNESSES:
        pytest.fail(f"backend {name!r} has no contract harness: add one to tests/contract/harnesses.py")
    return HARNESSES[name](request)


def names_of(h: Harness) -> list[str]:
    return sorted(i.name for i in h.backend.list(GROUP))


def states(h: Harness) -> dict[str, InstanceState]:
    return {i.name: i.state for i in h.backend.list(GROUP)}


def test_created_names_are_listed_and_boot(harness: Harness) -> None:
    result = harness.backend.create(GROUP, ["garo-eng-linux-1", "garo-eng-linux-2"], {})
    assert sorted(result.created) == ["garo-eng-linux-1", "garo-eng-linux-2"]
    assert result.failed == {} and result.existed == ()
    assert set(states(harness).values()) == {InstanceState.CREATING}
    harness.settle()
    assert states(harness) == {"garo-eng-linux-1": InstanceState.RUNNING, "garo-eng-linux-2": InstanceState.RUNNING}
    assert all(i.group == GROUP and i.created_at > 0 for i in harness.backend.list(GROUP))


def test_creating_the_same_names_again_does_not_duplicate(harness: Harness) -> None:
    harness.backend.create(GROUP, ["garo-a", "garo-b"], {})
    again = harness.backend.create(GROUP, ["garo-b", "garo-c", "garo-c"], {})
    assert sorted(again.created) == ["garo-b", "garo-c"]
    assert again.existed == ("garo-b",), "a name another replica made is not the caller's to configure"
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
    harness.backend.set_metadata(GROUP, "garo-a", {"garo-note": "43"})
    seen = harness.metadata("garo-a")
    # (garo-job is the agent's relabel of a taken VM: a backend whose listing cannot show it, GCP, sends none.)
    assert seen["garo-jit-config"] == "ZW5jb2RlZA==" and seen["garo-note"] == "43" and seen["garo-job"] == "42"


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


def test_metadata_for_an_instance_that_does_not_exist_is_not_found(harness: Harness) -> None:
    with pytest.raises(BackendError) as excinfo:
        harness.backend.set_metadata(GROUP, "garo-never-created", {"garo-job": "42"})
    assert excinfo.value.reason is Failure.NOT_FOUND
    assert excinfo.value.retryable is False
    assert names_of(harness) == []
