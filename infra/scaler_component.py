"""The in-cluster scaler: one container-optimized VM in the department's own network.

It runs in a single-VM regional MIG so that a VM that stops or a zone that
fails gets a replacement (the MIG repairs any VM that is not RUNNING, and COS
restarts the container); it needs no health-check ingress. Its service account
is the least privilege the agent needs:

* manage only this department's MIGs and instances: a custom role bound with
  an IAM condition on the resource name prefix ``garo-<dept>-`` (and never its
  own MIG, ``garo-<dept>--scaler``), plus operation polling that IAM cannot
  scope by name; never project-wide compute admin. Each permission is one
  the agent's Compute calls need (proven by tests/infra/test_least_privilege.py);
* act as the runner service account only (to create VMs that run as it);
* pull only its own subscription; read only its own runner credential (the department's
  runner App key, never the hub's webhook App or another department's);
* write logs and metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from infra.secrets import secret_reader
from infra.stack import name_for
from scaler.config import StackConfig

COS_IMAGE = "projects/cos-cloud/global/images/family/cos-stable"
# What the agent's Compute calls need (scaler/backends/gcp.py; the method -> permission
# table is tests/infra/test_least_privilege.py, which fails on any drift either way):
# read and change its groups' MIGs (list members, create/delete/resume/start by name),
# read an instance and set its metadata (the JIT config). All name-scoped by the condition.
MANAGE_PERMISSIONS = (
    "compute.instanceGroupManagers.get",
    "compute.instanceGroupManagers.update",
    "compute.instances.get",
    "compute.instances.setMetadata",
)
# Waiting for the MIG operations those calls return: IAM checks this on the operation,
# whose name no garo-<dept>- condition can match, so it is granted project-wide. No
# zoneOperations.get: the only zonal operation (setMetadata) is never awaited.
READ_PERMISSIONS = ("compute.regionOperations.get",)


def manage_condition(department: str) -> str:
    """CEL over ``resource.name``: this department's VMs and MIGs, not the scaler's own MIG."""
    prefix, own = f"garo-{department}-", f"garo-{department}--"
    names = [f'resource.name.extract("/{kind}/{{name}}")' for kind in ("instances", "instanceGroupManagers")]
    return " || ".join(f'({n}.startsWith("{prefix}") && !{n}.startsWith("{own}"))' for n in names)


def container_declaration(image: str, env: dict[str, str]) -> str:
    """The ``gce-container-declaration`` COS reads (konlet); env holds no secret values."""
    spec = {
        "spec": {
            "containers": [
                {
                    "name": "garo-scaler",
                    "image": image,
                    "args": ["agent"],
                    "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                }
            ],
            "restartPolicy": "Always",
        }
    }
    return json.dumps(spec, sort_keys=True)


@dataclass(frozen=True)
class ScalerArgs:
    """What the department hands its scaler."""

    config: StackConfig
    #: Self-link of the department's subnet the scaler VM runs in.
    subnet: pulumi.Input[str]
    #: Resource name (``projects/<p>/serviceAccounts/<email>``) of the runner identity the scaler acts as.
    runner_service_account: pulumi.Input[str]
    #: Name of the department's job subscription the scaler pulls.
    subscription: pulumi.Input[str]
    #: Secret Manager secret holding this department's own runner credential (its runner App's key),
    #: if the stack has one: the only secret the scaler may read.
    runner_credential_secret: pulumi.Input[str] | None
    #: The agent's environment (no secret values: secrets are referenced by name).
    env: pulumi.Input[dict[str, str]]
    #: Secret Manager secrets of the department's additional runner Apps (``runnerApp.additional``).
    additional_credential_secrets: Sequence[str] = ()
    #: More VM metadata, e.g. cloud-init ``user-data`` starting the metrics collector (infra/monitoring.py).
    metadata: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class Scaler(pulumi.ComponentResource):
    """Service account, its scoped grants, and the single-VM MIG running the scaler image.

    ``outputs`` is what it registers: the service account's email and the MIG's self-link.
    """

    service_account: gcp.serviceaccount.Account
    mig: gcp.compute.RegionInstanceGroupManager
    outputs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ScalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:Scaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        config = args.config
        dept, project = config.department, config.project
        sa = gcp.serviceaccount.Account(
            f"{name}-sa",
            account_id=name_for(f"garo-{dept}-scaler", 30),
            display_name=f"Garo scaler of {dept}",
            project=project,
            opts=child,
        )
        self.service_account = sa
        role_suffix = dept.replace("-", "_")
        manage = gcp.projects.IAMCustomRole(
            f"{name}-manage-role",
            role_id=f"garoScalerManage_{role_suffix}",
            title=f"Garo scaler ({dept}): manage runner VMs",
            project=project,
            permissions=list(MANAGE_PERMISSIONS),
            opts=child,
        )
        read = gcp.projects.IAMCustomRole(
            f"{name}-read-role",
            role_id=f"garoScalerRead_{role_suffix}",
            title=f"Garo scaler ({dept}): poll operations",
            project=project,
            permissions=list(READ_PERMISSIONS),
            opts=child,
        )
        gcp.projects.IAMMember(
            f"{name}-manage",
            project=project or "",
            role=manage.name,
            member=sa.member,
            condition={
                "title": f"garo-{dept}-only",
                "description": f"Only MIGs and VMs named garo-{dept}-*",
                "expression": manage_condition(dept),
            },
            opts=child,
        )
        gcp.projects.IAMMember(f"{name}-read", project=project or "", role=read.name, member=sa.member, opts=child)
        for role in ("roles/logging.logWriter", "roles/monitoring.metricWriter"):
            gcp.projects.IAMMember(
                f"{name}-{role.split('/')[1].split('.')[1].lower()}",
                project=project or "",
                role=role,
                member=sa.member,
                opts=child,
            )
        gcp.serviceaccount.IAMMember(
            f"{name}-act-as-runner",
            service_account_id=args.runner_service_account,
            role="roles/iam.serviceAccountUser",
            member=sa.member,
            opts=child,
        )
        gcp.pubsub.SubscriptionIAMMember(
            f"{name}-subscriber",
            project=project,
            subscription=args.subscription,
            role="roles/pubsub.subscriber",
            member=sa.member,
            opts=child,
        )
        if args.runner_credential_secret is not None:
            secret_reader(f"{name}-runner-credential", args.runner_credential_secret, sa.member, self)
        for i, secret in enumerate(args.additional_credential_secrets):
            secret_reader(f"{name}-runner-credential-{i + 2}", secret, sa.member, self)
        labels = {**config.resource_labels, "garo-group": "scaler"}
        template = gcp.compute.InstanceTemplate(
            f"{name}-template",
            name_prefix=f"{name_for(f'garo-{dept}--scaler', 36)}-",
            project=project,
            region=config.region,
            machine_type="e2-small",
            labels=labels,
            metadata={
                "gce-container-declaration": pulumi.Output.from_input(args.env).apply(
                    lambda e: container_declaration(config.scaler_image, e)
                ),
                "google-logging-enabled": "true",
                "google-monitoring-enabled": "true",
                "enable-oslogin": "TRUE",
                "block-project-ssh-keys": "TRUE",
                **args.metadata,
            },
            disks=[
                {"boot": True, "auto_delete": True, "source_image": COS_IMAGE, "disk_size_gb": 20, "labels": labels}
            ],
            network_interfaces=[{"subnetwork": args.subnet}],
            service_account={"email": sa.email, "scopes": ["cloud-platform"]},
            shielded_instance_config={
                "enable_secure_boot": True,
                "enable_vtpm": True,
                "enable_integrity_monitoring": True,
            },
            opts=child,
        )
        base = name_for(f"garo-{dept}--scaler", 55)
        self.mig = gcp.compute.RegionInstanceGroupManager(
            f"{name}-mig",
            name=base,
            base_instance_name=base,
            project=project,
            region=config.region,
            versions=[{"name": "primary", "instance_template": template.self_link_unique}],
            target_size=1,
            # The scaler is stateless (the truth is in the cloud, GitHub and the subscription): replace freely.
            update_policy={
                "type": "PROACTIVE",
                "minimal_action": "REPLACE",
                "max_surge_fixed": 3,
                "max_unavailable_fixed": 0,
            },
            instance_lifecycle_policy={"default_action_on_failure": "REPAIR"},
            wait_for_instances=False,
            opts=child,
        )
        self.outputs = {"serviceAccount": sa.email, "mig": self.mig.self_link}
        self.register_outputs(self.outputs)
