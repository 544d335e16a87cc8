"""Where a department's runner VMs pull their JIT configs: the scaler's JIT endpoint on the VPC.

The scaler runs in a one-VM managed instance group whose VM (and IP) changes on
every rollout, so runners reach it through an internal passthrough load
balancer on a fixed internal address: the last usable address of the
department's subnet (GCE reserves the first two and the last two; VMs get
addresses from the bottom, so the top one is free on a fresh or existing
subnet). That address is known at plan time, so the runner templates
(``garo-agent-url``) and the scaler (``GARO_JIT_URL``, also the audience of
the VMs' identity tokens) agree on it without an extra lookup.

Only this port is opened, only from the runner service account to the
scaler service account, plus Google's health-check ranges; the
department's deny-all-ingress rule stays below both (infra/network.py).
Plain HTTP on the VPC, not HTTPS: docs/security.md says why.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from scaler.agent.jit_endpoint import DEFAULT_JIT_PORT
from scaler.config import StackConfig

#: Google's health-check probers (documented source ranges for internal passthrough load balancers).
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")


def jit_address(cidr: str) -> str:
    """The endpoint's internal IP: the subnet's last usable address."""
    return str(ipaddress.ip_network(cidr)[-3])


def jit_url(cidr: str, port: int = DEFAULT_JIT_PORT) -> str:
    return f"http://{jit_address(cidr)}:{port}"


@dataclass(frozen=True)
class JitEndpointArgs:
    config: StackConfig
    network: pulumi.Input[str]
    subnet: pulumi.Input[str]
    scaler_instance_group: pulumi.Input[str]
    scaler_service_account: pulumi.Input[str]
    runner_service_account: pulumi.Input[str]
    port: int = DEFAULT_JIT_PORT


class JitEndpoint(pulumi.ComponentResource):
    """Reserved address, health check, backend service, forwarding rule and the two firewall rules."""

    outputs: dict[str, pulumi.Input[str]]

    def __init__(self, name: str, args: JitEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:JitEndpoint", name, None, opts)
        config = args.config
        assert config.network is not None, "department stacks always have a network (schema)"
        dept, project, region = config.department, config.project, config.region
        child = pulumi.ResourceOptions(parent=self)
        labels = {**config.resource_labels, "garo-group": "scaler"}
        port = str(args.port)
        address = gcp.compute.Address(
            f"{name}-address",
            name=f"garo-{dept}-jit",
            project=project,
            region=region,
            subnetwork=args.subnet,
            address_type="INTERNAL",
            address=jit_address(config.network.cidr),
            description=f"Garo {dept}: the scaler's JIT endpoint (runner VMs pull their configs here)",
            labels=labels,
            opts=child,
        )
        health = gcp.compute.RegionHealthCheck(
            f"{name}-health",
            name=f"garo-{dept}-jit",
            project=project,
            region=region,
            http_health_check={"port": args.port, "request_path": "/healthz"},
            opts=child,
        )
        backend = gcp.compute.RegionBackendService(
            f"{name}-backend",
            name=f"garo-{dept}-jit",
            project=project,
            region=region,
            load_balancing_scheme="INTERNAL",
            protocol="TCP",
            backends=[{"group": args.scaler_instance_group, "balancing_mode": "CONNECTION"}],
            health_checks=health.id,
            opts=child,
        )
        rule = gcp.compute.ForwardingRule(
            f"{name}-rule",
            name=f"garo-{dept}-jit",
            project=project,
            region=region,
            load_balancing_scheme="INTERNAL",
            ip_protocol="TCP",
            ports=[port],
            ip_address=address.address,
            network=args.network,
            subnetwork=args.subnet,
            backend_service=backend.id,
            labels=labels,
            opts=child,
        )

        def allow_to_scaler(
            suffix: str,
            rule: str,
            description: str | None = None,
            *,
            accounts: list[pulumi.Input[str]] | None = None,
            ranges: list[str] | None = None,
        ) -> None:
            """One ingress rule to the scaler's service account on the endpoint's port only."""
            gcp.compute.Firewall(
                f"{name}-{suffix}",
                name=f"garo-{dept}-{rule}",
                project=project,
                network=args.network,
                direction="INGRESS",
                priority=1000,
                allows=[{"protocol": "tcp", "ports": [port]}],
                source_service_accounts=accounts,
                source_ranges=ranges,
                target_service_accounts=[args.scaler_service_account],
                description=description,
                opts=child,
            )

        allow_to_scaler(
            "from-runners",
            "allow-runners-to-jit",
            "Runner VMs pull their JIT configs from the scaler; nothing else reaches it",
            accounts=[args.runner_service_account],
        )
        allow_to_scaler("health-checks", "allow-jit-health-checks", ranges=list(HEALTH_CHECK_RANGES))
        self.outputs = {"url": jit_url(config.network.cidr, args.port), "forwardingRule": rule.self_link}
        self.register_outputs(self.outputs)
