"""How the AWS agent reads its subscription on the hub's Pub/Sub with no Google key.

Workload Identity Federation with AWS as the identity provider: the agent's
instance role signs an STS ``GetCallerIdentity`` request, Google's STS checks
it with AWS and returns a short-lived federated token. The pool, its AWS
provider (this account only, this department's scaler role only, through an
attribute condition) and the binding (``roles/pubsub.subscriber`` on this
department's subscription, nothing else) are declared here, in the department
stack, through its ``gcp`` provider: the department stays one ``pulumi up``,
and the hub needs to know nothing of AWS accounts (docs/deploy-aws.md).

``credential_config`` is the ``external_account`` file google-auth reads
(``GOOGLE_APPLICATION_CREDENTIALS``); it holds no secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

PROVIDER_ID = "aws"
IMDS = "http://169.254.169.254"
# Google's documented mapping for AWS: the role of an assumed-role session, without the session name.
AWS_ROLE_MAPPING = (
    "assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' "
    "+ assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
)


def pool_id(department: str) -> str:
    """4-32 characters; a deleted pool's id stays taken for 30 days (docs/deploy-aws.md)."""
    return f"garo-{department}"[:32]


def assumed_role(account: str, role_name: str) -> str:
    return f"arn:aws:sts::{account}:assumed-role/{role_name}"


def credential_config(provider_name: str) -> dict[str, Any]:
    """google-auth's ``external_account`` configuration for an EC2 instance role (IMDSv2)."""
    return {
        "type": "external_account",
        "audience": f"//iam.googleapis.com/{provider_name}",
        "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
        "token_url": "https://sts.googleapis.com/v1/token",
        "credential_source": {
            "environment_id": "aws1",
            "region_url": f"{IMDS}/latest/meta-data/placement/availability-zone",
            "url": f"{IMDS}/latest/meta-data/iam/security-credentials",
            "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
            "imdsv2_session_token_url": f"{IMDS}/latest/api/token",
        },
    }


@dataclass(frozen=True)
class FederationArgs:
    department: str
    project: str
    account: pulumi.Input[str]
    scaler_role_name: str
    subscription: pulumi.Input[str]  # the subscription's short name, in ``project``


class AwsFederation(pulumi.ComponentResource):
    """Pool + AWS provider + subscriber binding for one department's scaler role."""

    pool: gcp.iam.WorkloadIdentityPool
    provider: gcp.iam.WorkloadIdentityPoolProvider
    outputs: dict[str, Any]

    def __init__(self, name: str, args: FederationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:Federation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        dept = args.department
        role = pulumi.Output.from_input(args.account).apply(lambda a: assumed_role(a, args.scaler_role_name))
        self.pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-pool",
            workload_identity_pool_id=pool_id(dept),
            project=args.project,
            display_name=f"Garo {dept} (AWS)"[:32],
            description=f"The AWS scaler of department {dept} reads its Pub/Sub subscription",
            opts=child,
        )
        self.provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-provider",
            workload_identity_pool_id=self.pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=PROVIDER_ID,
            project=args.project,
            display_name="AWS",
            aws={"account_id": args.account},
            attribute_mapping={"google.subject": "assertion.arn", "attribute.aws_role": AWS_ROLE_MAPPING},
            # Only this department's scaler role, not every role of the account.
            attribute_condition=role.apply(lambda r: f'attribute.aws_role == "{r}"'),
            opts=child,
        )
        member = pulumi.Output.all(self.pool.name, role).apply(
            lambda v: f"principalSet://iam.googleapis.com/{v[0]}/attribute.aws_role/{v[1]}"
        )
        gcp.pubsub.SubscriptionIAMMember(
            f"{name}-subscriber",
            project=args.project,
            subscription=args.subscription,
            role="roles/pubsub.subscriber",
            member=member,
            opts=child,
        )
        self.credential_config = self.provider.name.apply(credential_config)
        self.outputs = {"workloadIdentityProvider": self.provider.name, "credentialConfig": self.credential_config}
        self.register_outputs(self.outputs)
