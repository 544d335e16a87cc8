"""A department's isolated network: custom-mode VPC, one subnet, NAT for egress, no ingress.

Runners and the scaler have no external IPs and need no inbound connection:
they pull work (Pub/Sub) and reach GitHub through Cloud NAT. The only ingress
ever opened is IAP's TCP-forwarding range on port 22, and only when
``network.iapSsh`` is set, for on-call debugging.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from scaler.config import StackConfig

IAP_RANGE = "35.235.240.0/20"


class DepartmentNetwork(pulumi.ComponentResource):
    """VPC, subnet (private Google access, flow logs), router + NAT, deny-all-ingress firewall."""

    network: gcp.compute.Network
    subnet: gcp.compute.Subnetwork
    #: Registered outputs: the VPC's and the subnet's self-links.
    outputs: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:DepartmentNetwork", name, None, opts)
        assert config.network is not None, "department stacks always have a network (schema)"
        dept, region, project = config.department, config.region, config.project
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(
            f"{name}-vpc",
            name=f"garo-{dept}",
            project=project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description=f"Garo runners of department {dept}",
            opts=child,
        )
        self.subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            name=f"garo-{dept}-{region}",
            project=project,
            region=region,
            network=self.network.id,
            ip_cidr_range=config.network.cidr,
            # Runners pull images, logs and Pub/Sub over Google's private path.
            private_ip_google_access=True,
            log_config={
                "aggregation_interval": "INTERVAL_5_SEC",
                "flow_sampling": 0.5,
                "metadata": "INCLUDE_ALL_METADATA",
            },
            opts=child,
        )
        router = gcp.compute.Router(
            f"{name}-router", name=f"garo-{dept}", project=project, region=region, network=self.network.id, opts=child
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            name=f"garo-{dept}",
            project=project,
            region=region,
            router=router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
            subnetworks=[{"name": self.subnet.id, "source_ip_ranges_to_nats": ["ALL_IP_RANGES"]}],
            # Bursts of fresh VMs all talk to GitHub at once: allocate ports dynamically.
            enable_dynamic_port_allocation=True,
            min_ports_per_vm=64,
            log_config={"enable": True, "filter": "ERRORS_ONLY"},
            opts=child,
        )
        gcp.compute.Firewall(
            f"{name}-deny-ingress",
            name=f"garo-{dept}-deny-all-ingress",
            project=project,
            network=self.network.id,
            direction="INGRESS",
            priority=65534,
            denies=[{"protocol": "all"}],
            source_ranges=["0.0.0.0/0"],
            log_config={"metadata": "EXCLUDE_ALL_METADATA"},
            opts=child,
        )
        if config.network.iap_ssh:
            gcp.compute.Firewall(
                f"{name}-iap-ssh",
                name=f"garo-{dept}-allow-iap-ssh",
                project=project,
                network=self.network.id,
                direction="INGRESS",
                priority=1000,
                allows=[{"protocol": "tcp", "ports": ["22"]}],
                source_ranges=[IAP_RANGE],
                opts=child,
            )
        self.outputs = {"network": self.network.self_link, "subnet": self.subnet.self_link}
        self.register_outputs(self.outputs)
