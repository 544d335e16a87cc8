"""An AWS department stack: network, runner identity, pools, GitHub secret, subscription, federation, scaler.

Everything AWS is tagged ``garo-department=<dept>`` (the scaler's IAM
conditions rely on it) and named ``garo-<dept>-...``. The job subscription
lives on the hub's Pub/Sub (``gcp:project`` of this stack, usually the hub's
project), declared here with the ``gcp`` provider together with the workload
identity pool that lets this department's scaler role, and nothing else, pull it.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.federation import AwsFederation, FederationArgs
from infra.aws.jit_bucket import JitBucket, JitBucketArgs
from infra.aws.jit_endpoint import AwsJitEndpoint, AwsJitEndpointArgs
from infra.aws.network import AwsNetwork, AwsNetworkArgs
from infra.aws.permissions import assume_role_policy, runner_policy, secret_policy
from infra.aws.runner_pool import AwsRunnerPool, AwsRunnerPoolArgs, image_source
from infra.aws.scaler import IDENTITY_CERT_PATH, AwsScaler, AwsScalerArgs
from infra.stack import LoadedStack, for_scaler, portal_document, portal_group
from infra.subscription import JobSubscription, JobSubscriptionArgs
from scaler.config.routing import routing_document


def secret_arn(ref: str, region: str, account: str) -> str:
    """An existing secret named in the stack (``{secretManager: <name or ARN>}``)."""
    return ref if ref.startswith("arn:") else f"arn:aws:secretsmanager:{region}:{account}:secret:{ref}-??????"


class AwsDepartment(pulumi.ComponentResource):
    """The whole AWS department; ``outputs`` is what the stack exports (portal + conveniences)."""

    outputs: dict[str, Any]

    def __init__(self, name: str, loaded: LoadedStack, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:Department", name, None, opts)
        config = self.config = loaded.config
        assert config.network is not None, "department stacks always have a network (schema)"
        self.stack = loaded.stack
        dept, region, project = config.department, config.region, config.project or ""
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(config.resource_labels)
        self.account = aws.get_caller_identity_output().account_id
        self.network = AwsNetwork(
            f"{name}-network",
            AwsNetworkArgs(dept, region, self.account, config.network.cidr, config.network.zones, tags),
            opts=child,
        )
        # Runners pull their JIT configs from the agent through an internal load balancer (a stable address).
        self.endpoint = AwsJitEndpoint(
            f"{name}-jit-endpoint",
            AwsJitEndpointArgs(
                dept,
                self.network.vpc.id,
                [s.id for s in self.network.private_subnets.values()],
                self.network.security_group.id,
                tags,
            ),
            opts=child,
        )
        # The fallback for instances without the agent's URL (launched under an older stack).
        self.jit = JitBucket(f"{name}-jit", JitBucketArgs(dept, region, self.account, tags), opts=child)
        # Runners hold a single-use JIT config and nothing else.
        runner_role = aws.iam.Role(
            f"{name}-runner-role",
            name=f"garo-{dept}-runner",
            description=f"Garo runners of {dept}: their own JIT config and state tag only",
            assume_role_policy=assume_role_policy("ec2.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-runner-policy",
            name=f"garo-{dept}-runner",
            role=runner_role.id,
            policy=pulumi.Output.all(self.account, self.jit.name).apply(lambda v: runner_policy(region, v[0], v[1])),
            opts=child,
        )
        runner_profile = aws.iam.InstanceProfile(
            f"{name}-runner-profile", name=f"garo-{dept}-runner", role=runner_role.name, tags=tags, opts=child
        )
        github = config.github
        # The department's own runner App (docs/security.md), or a development token.
        credential = github.private_key or github.token
        value = loaded.secret("garo:github.runnerApp.privateKey" if github.private_key else "garo:github.token")
        self.github_secret: aws.secretsmanager.Secret | None = None
        if credential is not None and credential.kind == "secret-manager":
            github_secret_arn: pulumi.Output[str] = self.account.apply(lambda a: secret_arn(credential.ref, region, a))
        elif credential is not None and credential.kind == "pulumi" and value is not None:
            self.github_secret = aws.secretsmanager.Secret(
                f"{name}-github-secret",
                name=f"garo/{dept}/github",
                description=f"GitHub credential of Garo department {dept}: read by its scaler only",
                recovery_window_in_days=7,
                tags=tags,
                opts=child,
            )
            aws.secretsmanager.SecretVersion(
                f"{name}-github-secret-version",
                secret_id=self.github_secret.id,
                secret_string=value,  # a Pulumi secret (infra.stack)
                opts=pulumi.ResourceOptions(parent=self.github_secret),
            )
            github_secret_arn = self.github_secret.arn
        else:
            raise pulumi.RunError(
                "garo:github: an AWS department needs its GitHub credential as a Pulumi secret or "
                "{secretManager: <Secrets Manager name or ARN>}"
            )
        self.jobs = JobSubscription(f"{name}-jobs", JobSubscriptionArgs(config), opts=child)
        self.pools = [
            AwsRunnerPool(
                f"{name}-{g.name}",
                AwsRunnerPoolArgs(
                    dept,
                    g,
                    {z: s.id for z, s in self.network.private_subnets.items()},
                    self.network.security_group.id,
                    runner_profile.arn,
                    self.jit.name,
                    self.endpoint.url,
                    tags,
                ),
                opts=child,
            )
            for g in config.groups
        ]
        self.federation = AwsFederation(
            f"{name}-federation",
            FederationArgs(dept, project, self.account, AwsScaler.role_name(dept), self.jobs.subscription.name),
            opts=child,
        )
        env: dict[str, Any] = {
            "GARO_DEPARTMENT": dept,
            "GARO_PROJECT": project,
            "GARO_REGION": region,
            "AWS_REGION": region,
            "GOOGLE_CLOUD_PROJECT": project,
            "GARO_BUS": self.jobs.subscription.name.apply(lambda s: f"pubsub://{project}/{s}"),
            "GARO_SUBSCRIPTION": self.jobs.subscription.id,
            "GARO_POOLS": pulumi.Output.all(*[p.describe() for p in self.pools]).apply(
                lambda v: json.dumps(v, sort_keys=True)
            ),
            "GARO_STACK_CONFIG": json.dumps({"config": for_scaler(loaded.raw)}, sort_keys=True),
            "GARO_GITHUB_SECRET": github_secret_arn,
            # The JIT object of an instance is jit/<runner role id>:<instance id> (scaler/backends/aws.py).
            "GARO_JIT_BUCKET": self.jit.name,
            "GARO_RUNNER_ROLE_ID": runner_role.unique_id,
            # Runners pull from here (their garo-agent-url tag is the same URL); documents are checked
            # with the region's certificate, a file beside the env (infra/aws/scaler.py).
            "GARO_JIT_URL": self.endpoint.url,
            "GARO_JIT_AWS_CERT_FILE": IDENTITY_CERT_PATH,
        }
        self.scaler = AwsScaler(
            f"{name}-scaler",
            AwsScalerArgs(
                department=dept,
                region=region,
                account=self.account,
                image=config.scaler_image,
                subnets=tuple(s.id for s in self.network.private_subnets.values()),
                security_group=self.endpoint.scaler_security_group.id,
                target_group_arn=self.endpoint.target_group.arn,
                identity_cert=config.aws_identity_cert,
                runner_role_arn=runner_role.arn,
                github_secret_arn=github_secret_arn,
                jit_bucket=self.jit.name,
                env=pulumi.Output.from_input(env),
                credential_config=self.federation.credential_config,
                tags=tags,
            ),
            opts=child,
        )
        if self.github_secret is not None:
            aws.secretsmanager.SecretPolicy(
                f"{name}-github-secret-policy",
                secret_arn=self.github_secret.arn,
                policy=self.scaler.role.arn.apply(secret_policy),
                block_public_policy=True,
                opts=pulumi.ResourceOptions(parent=self.github_secret),
            )
        self.outputs = self._exports(github_secret_arn)
        self.register_outputs(self.outputs)

    def _portal(self, github_secret_arn: pulumi.Output[str]) -> pulumi.Output[dict[str, Any]]:
        """The versioned shape in docs/portal-outputs.schema.json (AWS fields)."""
        c = self.config
        assert c.network is not None
        groups = [
            {
                **portal_group(g, image_source(g.ami, g.image_family)),
                "instanceTypes": list(g.instance_types),
                "asg": pool.asg.name,
                "fallbackAsg": pool.fallback_asg.name if pool.fallback_asg else None,
                "launchTemplate": pool.template.id,
            }
            for g, pool in zip(c.groups, self.pools, strict=True)
        ]
        return pulumi.Output.from_input(
            portal_document(
                "department",
                c,
                self.stack,
                department=c.department,
                account=self.account,
                network={
                    "cidr": c.network.cidr,
                    "zones": [f"{c.region}{z}" for z in c.network.zones],
                    "vpc": self.network.vpc.id,
                    "subnets": [s.id for s in self.network.private_subnets.values()],
                    "securityGroup": self.network.security_group.id,
                },
                groups=groups,
                scaler={
                    "role": self.scaler.role.arn,
                    "asg": self.scaler.asg.name,
                    "image": c.scaler_image,
                    "githubSecret": github_secret_arn,
                    "jitBucket": self.jit.name,
                },
                subscription={**self.jobs.portal(), "workloadIdentityProvider": self.federation.provider.name},
            )
        )

    def _exports(self, github_secret_arn: pulumi.Output[str]) -> dict[str, Any]:
        return {
            "portal": self._portal(github_secret_arn),
            "route": routing_document([self.config])["departments"][0],
            "subscription": self.jobs.subscription.id,
            "scalerRole": self.scaler.role.arn,
            "asgs": {g.name: pool.asg.name for g, pool in zip(self.config.groups, self.pools, strict=True)},
            # The external_account file the agent reads (GOOGLE_APPLICATION_CREDENTIALS); no key in it.
            "gcpCredentialConfig": self.federation.credential_config,
            # Where runners pull their JIT configs (the internal load balancer; not reachable from outside).
            "jitUrl": self.endpoint.url,
        }
