"""The agent addresses exactly the MIGs the Pulumi program declares (one naming function for both)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from scaler.agent.settings import Pool, load
from scaler.backends.gcp import GcpBackend, GcpGroup
from scaler.config import load_stack_file
from scaler.naming import INSTANCE_NAME_RE, mig_name
from tests.infra.conftest import EXAMPLES, of_type


def deployed_env(capture: dict[str, Any], stack: str) -> dict[str, str]:
    """The environment the scaler container gets, from the template the program declares."""
    (template,) = [t for t in of_type(capture, "InstanceTemplate") if t["name"] == f"{stack}-scaler-template"]
    container = json.loads(template["inputs"]["metadata"]["gce-container-declaration"])["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize("stack", ("payments", "research"))
def test_the_agent_uses_the_mig_names_pulumi_declares(captures: dict[str, Any], stack: str) -> None:
    config = load_stack_file(EXAMPLES / f"Pulumi.{stack}.yaml")
    declared = {r["name"]: r["inputs"]["name"] for r in of_type(captures[stack], "RegionInstanceGroupManager")}
    # Both ways the agent finds its MIGs: by convention (no GARO_POOLS) and as deployed (GARO_POOLS).
    by_convention = GcpBackend.from_config(config, session=requests.Session()).groups
    as_deployed = load(deployed_env(captures[stack], stack)).pools
    for group in config.groups:
        expected = GcpGroup(declared[f"{stack}-{group.name}-mig"], declared.get(f"{stack}-{group.name}-od-mig"))
        assert by_convention[group.name] == expected, group.name
        assert as_deployed[group.name] == Pool(expected.mig, expected.fallback), group.name
    runner_migs = {mig for group in by_convention.values() for mig in group.migs}
    assert set(declared.values()) - runner_migs == {f"garo-{stack}--scaler"}  # every other MIG is a group's


def test_mig_names_fit_gce_and_refuse_what_the_schema_refuses() -> None:
    longest = mig_name("d" * 20, "g" * 20, fallback=True)
    assert INSTANCE_NAME_RE.match(longest) and len(longest) == 49
    for department, group in (("eng", "Linux"), ("eng", "-x"), ("e" * 21, "linux"), ("eng", "")):
        with pytest.raises(ValueError):
            mig_name(department, group)
