"""A department stack: network, runner identity, runner pools, subscription, scaler.

Everything here is named ``garo-<dept>-...`` and labelled with the
department, so cost reports split per department and the scaler's IAM
condition (a name prefix) covers exactly this department's VMs.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.jit_endpoint import JitEndpoint, JitEndpointArgs, jit_url
from infra.monitoring import agent_collector_user_data
from infra.network import DepartmentNetwork
from infra.runner_pool import RunnerPool, RunnerPoolArgs, image_path
from infra.scaler_component import Scaler, ScalerArgs
from infra.secrets import additional_runner_credential_secrets, runner_credential_secret
from infra.stack import LoadedStack, for_scaler, name_for, portal_document, portal_group
from infra.subscription import JobSubscription, JobSubscriptionArgs
from scaler.agent.jit_endpoint import DEFAULT_JIT_PORT
from scaler.agent.metrics import DEFAULT_METRICS_PORT, METRICS_PATH
from scaler.config.routing import routing_document

RUNNER_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")


class Department(pulumi.ComponentResource):
    """The whole department.

    ``outputs`` is the one place for what it produces: registered as the
    component's outputs and exported as the stack's (the portal document plus
    conveniences: ``route`` for the hub, the subscription, the scaler's
    identity and the MIGs).
    """

    outputs: dict[str, Any]

    def __init__(self, name: str, loaded: LoadedStack, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:gcp:Department", name, None, opts)
        config = self.config = loaded.config
        self.stack = loaded.stack
        dept, project = config.department, config.project
        child = pulumi.ResourceOptions(parent=self)
        self.network = DepartmentNetwork(f"{name}-network", config, opts=child)
        # Runners hold a single-use JIT config and nothing else: logs and metrics only.
        self.runner_sa = gcp.serviceaccount.Account(
            f"{name}-runner-sa",
            account_id=name_for(f"garo-{dept}-runner", 30),
            display_name=f"Garo runners of {dept}",
            project=project,
            opts=child,
        )
        for role in RUNNER_ROLES:
            gcp.projects.IAMMember(
                f"{name}-runner-{role.split('.')[-1].lower()}",
                project=project or "",
                role=role,
                member=self.runner_sa.member,
                opts=child,
            )
        self.runner_credential = runner_credential_secret(f"{name}-runner-credential", loaded, self)
        self.jobs = JobSubscription(f"{name}-jobs", JobSubscriptionArgs(config), opts=child)
        assert config.network is not None, "department stacks always have a network (schema)"
        agent_url = jit_url(config.network.cidr, DEFAULT_JIT_PORT)  # where runner VMs pull their JIT configs
        self.pools = [
            RunnerPool(
                f"{name}-{g.name}",
                RunnerPoolArgs(
                    config=config,
                    group=g,
                    subnet=self.network.subnet.self_link,
                    service_account=self.runner_sa.email,
                    agent_url=agent_url,
                ),
                opts=child,
            )
            for g in config.groups
        ]
        env: dict[str, Any] = {
            "GARO_DEPARTMENT": dept,
            "GARO_PROJECT": project or "",
            "GARO_REGION": config.region,
            "GARO_BUS": self.jobs.subscription.name.apply(lambda s: f"pubsub://{project}/{s}"),
            "GARO_SUBSCRIPTION": self.jobs.subscription.id,
            "GARO_POOLS": pulumi.Output.all(*[p.describe() for p in self.pools]).apply(
                lambda v: json.dumps(v, sort_keys=True)
            ),
            "GARO_STACK_CONFIG": json.dumps({"config": for_scaler(loaded.raw)}, sort_keys=True),
            "GARO_METRICS_PORT": str(DEFAULT_METRICS_PORT),
            "GARO_JIT_URL": agent_url,
            "GARO_JIT_PORT": str(DEFAULT_JIT_PORT),
        }
        if self.runner_credential is not None:
            env["GARO_GITHUB_SECRET"] = self.runner_credential
        self.scaler = Scaler(
            f"{name}-scaler",
            ScalerArgs(
                config=config,
                subnet=self.network.subnet.self_link,
                runner_service_account=self.runner_sa.name,
                subscription=self.jobs.subscription.name,
                runner_credential_secret=self.runner_credential,
                additional_credential_secrets=additional_runner_credential_secrets(loaded),
                env=pulumi.Output.from_input(env),
                metadata={"user-data": agent_collector_user_data(DEFAULT_METRICS_PORT, METRICS_PATH)},
            ),
            opts=child,
        )
        self.jit_endpoint = JitEndpoint(
            f"{name}-jit",
            JitEndpointArgs(
                config=config,
                network=self.network.network.self_link,
                subnet=self.network.subnet.self_link,
                scaler_instance_group=self.scaler.mig.instance_group,
                scaler_service_account=self.scaler.service_account.email,
                runner_service_account=self.runner_sa.email,
            ),
            opts=child,
        )
        self.outputs = {
            "portal": self._portal(),
            "route": routing_document([config])["departments"][0],
            "subscription": self.jobs.subscription.id,
            "deadLetterSubscription": self.jobs.outputs["deadLetterSubscription"],
            "scalerServiceAccount": self.scaler.outputs["serviceAccount"],
            "migs": {g.name: pool.outputs["mig"] for g, pool in zip(config.groups, self.pools, strict=True)},
        }
        self.register_outputs(self.outputs)

    def _portal(self) -> pulumi.Output[dict[str, Any]]:
        """The versioned shape in docs/portal-outputs.schema.json."""
        c = self.config
        assert c.network is not None
        groups = [
            {
                **portal_group(g, image_path(c.project, g.image_family)),
                "mig": pool.outputs["mig"],
                "fallbackMig": pool.outputs["fallbackMig"],
            }
            for g, pool in zip(c.groups, self.pools, strict=True)
        ]
        return pulumi.Output.from_input(
            portal_document(
                "department",
                c,
                self.stack,
                department=c.department,
                network={
                    "cidr": c.network.cidr,
                    "iapSsh": c.network.iap_ssh,
                    "vpc": self.network.network.self_link,
                    "subnet": self.network.subnet.self_link,
                },
                groups=groups,
                scaler={
                    "serviceAccount": self.scaler.outputs["serviceAccount"],
                    "mig": self.scaler.outputs["mig"],
                    "image": c.scaler_image,
                },
                subscription=self.jobs.portal(),
            )
        )
