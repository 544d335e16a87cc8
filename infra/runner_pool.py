"""One runner group: instance template(s) and regional MIG(s) the scaler fills by name.

Pulumi declares the shape of a group; the scaler owns its size. So the MIG is
created empty and Pulumi ignores ``target_size`` (and the standby sizes, which
the scaler changes when it resumes a VM) after creation; the update policy is
opportunistic with no redistribution, so a template change never deletes a
busy runner: new VMs simply start from the new template.

A spot group with ``fallbackOnDemand`` gets a second, on-demand MIG
(``<mig>-od``) the scaler uses when spot capacity runs out. Both names come
from ``scaler.naming.mig_name``, the function the agent addresses them by.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from scaler.config import RunnerGroup, StackConfig
from scaler.naming import mig_name


def image_path(project: str | None, family: str) -> str:
    """``family`` alone means the images project is the stack's own (docs/images.md)."""
    if "/" in family:
        return (
            family
            if family.startswith("projects/")
            else f"projects/{family.split('/')[0]}/global/images/family/{family.split('/')[-1]}"
        )
    return f"projects/{project}/global/images/family/{family}"


def zones_of(region: str, group: RunnerGroup) -> list[str]:
    return [z if z.startswith(f"{region}-") else f"{region}-{z}" for z in group.zones]


@dataclass(frozen=True)
class RunnerPoolArgs:
    """What one runner group's pool is built from."""

    config: StackConfig
    group: RunnerGroup
    #: Self-link of the department's subnet (no external IPs; egress through Cloud NAT).
    subnet: pulumi.Input[str]
    #: Email of the runner service account the VMs run as (logs and metrics only).
    service_account: pulumi.Input[str]
    #: The scaler's JIT endpoint as VMs reach it (infra/jit_endpoint.py); the boot agent pulls its config there.
    agent_url: str | None = None


class RunnerPool(pulumi.ComponentResource):
    """Template + MIG (and the on-demand fallback pair) for one runner group.

    ``outputs`` is what it registers: the MIGs' self-links (``fallbackMig`` is
    None without a fallback).
    """

    mig: gcp.compute.RegionInstanceGroupManager
    fallback_mig: gcp.compute.RegionInstanceGroupManager | None
    outputs: dict[str, pulumi.Input[str] | None]

    def __init__(self, name: str, args: RunnerPoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:RunnerPool", name, None, opts)
        self._args = args
        department, group = args.config.department, args.group
        self.mig = self._pool(name, mig_name(department, group.name), spot=group.spot, standby=True)
        self.fallback_mig = None
        if group.spot and group.fallback_on_demand:
            self.fallback_mig = self._pool(
                f"{name}-od", mig_name(department, group.name, True), spot=False, standby=False
            )
        self.outputs = {
            "mig": self.mig.self_link,
            "fallbackMig": self.fallback_mig.self_link if self.fallback_mig else None,
        }
        self.register_outputs(self.outputs)

    def _template(self, name: str, base: str, spot: bool) -> gcp.compute.InstanceTemplate:
        config, group = self._args.config, self._args.group
        labels = {**config.resource_labels, "garo-group": group.name, "garo-pool": "spot" if spot else "on-demand"}
        metadata = {
            "garo-department": config.department,
            "garo-group": group.name,
            "garo-labels": ",".join(group.labels),
            "garo-time-to-start": str(group.time_to_start),
            "garo-time-to-live": str(group.time_to_live),
            **({"garo-agent-url": self._args.agent_url} if self._args.agent_url else {}),
            # The boot agent reports its state as a guest attribute (garo/state).
            "enable-guest-attributes": "TRUE",
            "enable-oslogin": "TRUE",
            "block-project-ssh-keys": "TRUE",
        }
        scheduling: gcp.compute.InstanceTemplateSchedulingArgsDict = (
            {
                "provisioning_model": "SPOT",
                "preemptible": True,
                "automatic_restart": False,
                "on_host_maintenance": "TERMINATE",
                "instance_termination_action": "DELETE",
            }
            if spot
            else {"provisioning_model": "STANDARD", "automatic_restart": True, "on_host_maintenance": "MIGRATE"}
        )
        return gcp.compute.InstanceTemplate(
            f"{name}-template",
            # Templates are immutable: a prefix lets Pulumi create the new one before deleting the old.
            name_prefix=f"{base[:36]}-",
            project=config.project,
            region=config.region,
            machine_type=group.machine_type,
            labels=labels,
            metadata=metadata,
            disks=[
                {
                    "boot": True,
                    "auto_delete": True,
                    "source_image": image_path(config.project, group.image_family),
                    "disk_size_gb": group.disk_gb,
                    "disk_type": "pd-balanced",
                    "labels": labels,
                }
            ],
            # No access_configs: no external IP. Egress goes through Cloud NAT.
            network_interfaces=[{"subnetwork": self._args.subnet}],
            service_account={"email": self._args.service_account, "scopes": ["cloud-platform"]},
            shielded_instance_config={
                "enable_secure_boot": True,
                "enable_vtpm": True,
                "enable_integrity_monitoring": True,
            },
            scheduling=scheduling,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=False),
        )

    def _pool(self, name: str, base: str, spot: bool, standby: bool) -> gcp.compute.RegionInstanceGroupManager:
        config, group = self._args.config, self._args.group
        template = self._template(name, base, spot)
        zones = zones_of(config.region, group)
        standby_size = group.standby_pool.size if standby else 0
        return gcp.compute.RegionInstanceGroupManager(
            f"{name}-mig",
            name=base,
            base_instance_name=base,
            project=config.project,
            region=config.region,
            versions=[{"name": "primary", "instance_template": template.self_link_unique}],
            # The scaler creates and deletes VMs by name; Pulumi only sets the initial size.
            target_size=0,
            distribution_policy_zones=zones or None,
            # Spot capacity is where it is: let the MIG pick any zone.
            distribution_policy_target_shape="ANY" if spot else "BALANCED",
            update_policy={
                "type": "OPPORTUNISTIC",
                "minimal_action": "NONE",
                "most_disruptive_allowed_action": "NONE",
                "instance_redistribution_type": "NONE",
                "replacement_method": "SUBSTITUTE",
                "max_surge_fixed": 0,
                "max_unavailable_fixed": max(3, len(zones)),
            },
            # A failed runner is deleted by the scaler (its job is lost anyway), never repaired in place.
            instance_lifecycle_policy={"default_action_on_failure": "DO_NOTHING", "force_update_on_repair": "NO"},
            standby_policy={"mode": "MANUAL", "initial_delay_sec": 120} if standby_size else None,
            target_suspended_size=standby_size if standby_size and group.standby_pool.mode == "suspended" else None,
            target_stopped_size=standby_size if standby_size and group.standby_pool.mode == "stopped" else None,
            wait_for_instances=False,
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["target_size", "target_suspended_size", "target_stopped_size"]
            ),
        )

    def describe(self) -> dict[str, object]:
        """The scaler's view of this group (written into its metadata as JSON)."""
        g = self._args.group
        return {
            "name": g.name,
            "mig": self.mig.name,
            "fallbackMig": self.fallback_mig.name if self.fallback_mig else None,
            "zones": zones_of(self._args.config.region, g),
        }
