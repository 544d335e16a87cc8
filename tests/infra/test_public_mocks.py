"""The components under Pulumi's *public* mocking API only: the upgrade canary.

``infra/plan_mocks.py`` (behind ``garo plan`` and the other tests here) leans
on Pulumi internals to see every registration with its options. This module
uses nothing but ``pulumi.runtime.set_mocks``, ``pulumi.runtime.Mocks`` and
``pulumi.runtime.test``, in the style of pulumi/examples' testing-unit-py, so
when a Pulumi upgrade breaks the internals, this still passes and the failure
points at plan_mocks rather than at the components.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pulumi
import pytest

from infra.runner_pool import RunnerPool, RunnerPoolArgs
from infra.scaler_component import Scaler, ScalerArgs
from scaler.config import StackConfig, load_stack_file
from scaler.naming import mig_name
from tests.infra.conftest import EXAMPLES

COMPUTE = "https://www.googleapis.com/compute/v1/projects"
# pulumi.runtime.test, as the SDK declares it without annotations: a test returning an Output.
pulumi_test = cast(Callable[[Callable[[], pulumi.Output[None]]], Callable[[], None]], pulumi.runtime.test)
# Importing pulumi_gcp.compute warns about deprecated aliases; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class GcpMocks(pulumi.runtime.Mocks):
    """Echo the inputs back, plus the few outputs GCP computes that the components read."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        name = outputs.get("name") or f"{outputs.get('namePrefix', args.name)}1"
        if args.typ == "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager":
            outputs["selfLink"] = (
                f"{COMPUTE}/{outputs['project']}/regions/{outputs['region']}/instanceGroupManagers/{name}"
            )
        if args.typ == "gcp:compute/instanceTemplate:InstanceTemplate":
            outputs.update(name=name, selfLinkUnique=f"{COMPUTE}/{outputs['project']}/global/instanceTemplates/{name}")
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{outputs['accountId']}@{outputs['project']}.iam.gserviceaccount.com"
            outputs.update(email=email, member=f"serviceAccount:{email}")
        if args.typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            outputs["name"] = f"projects/{outputs['project']}/roles/{outputs['roleId']}"
        return f"{args.name}_id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@pytest.fixture(autouse=True)
def public_mocks() -> None:
    pulumi.runtime.set_mocks(GcpMocks(), project="garo", stack="research", preview=False)


def research() -> StackConfig:
    return load_stack_file(EXAMPLES / "Pulumi.research.yaml")


@pulumi_test
def test_runner_pool_registers_the_migs_the_agent_addresses() -> pulumi.Output[None]:
    config = research()
    spot = next(g for g in config.groups if g.fallback_on_demand)
    pool = RunnerPool(
        "research-spot",
        RunnerPoolArgs(config=config, group=spot, subnet="subnet-link", service_account="runner@example"),
    )
    assert pool.fallback_mig is not None

    def check(values: list[Any]) -> None:
        urn, name, fallback_name, target_size, outputs = values
        assert (name, fallback_name) == (mig_name("research", "spot"), mig_name("research", "spot", True)), urn
        assert target_size == 0, f"{urn}: the scaler owns the size; Pulumi creates the MIG empty"
        assert outputs["mig"].endswith(f"/instanceGroupManagers/{name}"), urn
        assert outputs["fallbackMig"].endswith(f"/instanceGroupManagers/{fallback_name}"), urn

    return pulumi.Output.all(
        pool.urn, pool.mig.name, pool.fallback_mig.name, pool.mig.target_size, pulumi.Output.from_input(pool.outputs)
    ).apply(check)


@pulumi_test
def test_scaler_registers_its_identity_and_mig() -> pulumi.Output[None]:
    scaler = Scaler(
        "research-scaler",
        ScalerArgs(
            config=research(),
            subnet="subnet-link",
            runner_service_account="projects/acme-ci-research/serviceAccounts/runner@example",
            subscription="garo-research-jobs",
            runner_credential_secret=None,
            env={"GARO_DEPARTMENT": "research"},
        ),
    )

    def check(values: list[Any]) -> None:
        urn, outputs = values
        assert outputs["serviceAccount"] == "garo-research-scaler@acme-ci-research.iam.gserviceaccount.com", urn
        assert outputs["mig"].endswith("/regions/us-central1/instanceGroupManagers/garo-research--scaler"), urn

    return pulumi.Output.all(scaler.urn, pulumi.Output.from_input(scaler.outputs)).apply(check)
