"""Secrets in Secret Manager, whatever form the stack file gave them in.

A stack names a secret either as a Pulumi secret (``pulumi config set
--secret``), which we store as a Secret Manager version (the value travels
as a Pulumi secret, encrypted in the state), or as an existing Secret Manager
secret (``{secretManager: <name>}``) that we only reference. Services read it
at runtime through secret-level IAM, so no plaintext lives in env or metadata.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from scaler.config import Secret


def secret_manager_secret(
    name: str,
    secret_id: str,
    ref: Secret | None,
    value: pulumi.Output[str] | None,
    project: str | None,
    labels: dict[str, str],
    parent: pulumi.Resource,
) -> pulumi.Output[str] | None:
    """The secret's resource name (``projects/<p>/secrets/<id>``), creating it when the value is ours."""
    if ref is None:
        return None
    if ref.kind == "secret-manager":
        path = ref.ref if ref.ref.startswith("projects/") else f"projects/{project}/secrets/{ref.ref}"
        return pulumi.Output.from_input(path)
    if ref.kind != "pulumi" or value is None:
        raise pulumi.RunError(
            f"{secret_id}: on GCP a secret must be a Pulumi secret or {{secretManager: <name>}}, not {ref.kind}"
        )
    secret = gcp.secretmanager.Secret(
        name,
        secret_id=secret_id,
        project=project,
        labels=labels,
        replication={"auto": {}},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    gcp.secretmanager.SecretVersion(
        f"{name}-version",
        secret=secret.id,
        secret_data=value,  # already a Pulumi secret (infra.stack)
        opts=pulumi.ResourceOptions(parent=secret),
    )
    return secret.id
