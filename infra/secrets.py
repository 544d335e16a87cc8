"""Secrets in Secret Manager, whatever form the stack file gave them in.

A stack names a secret either as a Pulumi secret (``pulumi config set
--secret``), which we store as a Secret Manager version (the value travels
as a Pulumi secret, encrypted in the state), or as an existing Secret Manager
secret (``{secretManager: <name>}``) that we only reference. Services read it
at runtime through secret-level IAM, so no plaintext lives in env or metadata.

Which stack holds which GitHub credential (docs/security.md): a department
stores only its own runner App's key (``garo-<dept>-runner-app-key``), read
by its own scaler; the hub stores the webhook secret (read by the webhook)
and the webhook App's key (``garo-webhook-app-key``, read only by the
redelivery sweeper, never by the webhook service or any department).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.stack import LoadedStack
from scaler.config import Secret

WEBHOOK_APP_KEY_SECRET = "garo-webhook-app-key"


def runner_credential_id(department: str) -> str:
    """Secret Manager id of a department's runner credential: named after the department, in its project."""
    return f"garo-{department}-runner-app-key"


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
    secret, _ = secret_with_version(name, secret_id, value, project, labels, parent)  # value: a Pulumi secret
    return secret.id


def secret_with_version(
    name: str,
    secret_id: str,
    data: pulumi.Input[str],
    project: str | None,
    labels: dict[str, str],
    parent: pulumi.Resource,
) -> tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]:
    """A Secret Manager secret holding `data` as its one version (``<name>-version``, a child of the secret).

    Also how Cloud Run mounts a file that is not secret (the routing table, the RunMonitoring document):
    the plan shows such data in full, because it is not a Pulumi secret.
    """
    secret = gcp.secretmanager.Secret(
        name,
        secret_id=secret_id,
        project=project,
        labels=labels,
        replication={"auto": {}},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    version = gcp.secretmanager.SecretVersion(
        f"{name}-version",
        secret=secret.id,
        secret_data=data,
        opts=pulumi.ResourceOptions(parent=secret),
    )
    return secret, version


def secret_reader(
    name: str, secret_id: pulumi.Input[str], member: pulumi.Input[str], parent: pulumi.Resource
) -> gcp.secretmanager.SecretIamMember:
    """Secret-level IAM: `member` may read this one secret's versions (no project-wide secret access)."""
    return gcp.secretmanager.SecretIamMember(
        name,
        secret_id=secret_id,
        role="roles/secretmanager.secretAccessor",
        member=member,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def runner_credential_secret(name: str, loaded: LoadedStack, parent: pulumi.Resource) -> pulumi.Output[str] | None:
    """The department's own runner credential (its runner App's key, or a development token)."""
    config = loaded.config
    github = config.github
    if github.runner_app is not None:
        ref, path = github.runner_app.private_key, "garo:github.runnerApp.privateKey"
    else:
        ref, path = github.token, "garo:github.token"
    return secret_manager_secret(
        name,
        runner_credential_id(config.department),
        ref,
        loaded.secret(path),
        config.project,
        dict(config.resource_labels),
        parent,
    )


def additional_runner_credential_secrets(loaded: LoadedStack) -> list[str]:
    """Resource names of the department's additional runner App keys (Secret Manager references only)."""
    config = loaded.config
    app = config.github.runner_app
    refs = [a.private_key for a in app.additional] if app is not None else []
    return [
        ref.ref if ref.ref.startswith("projects/") else f"projects/{config.project}/secrets/{ref.ref}"
        for ref in refs
        if ref is not None and ref.kind == "secret-manager"
    ]


def webhook_app_key_secret(name: str, loaded: LoadedStack, parent: pulumi.Resource) -> pulumi.Output[str] | None:
    """The hub's webhook App key, for the redelivery sweeper only (no grant here)."""
    config = loaded.config
    app = config.github.webhook_app
    if app is None:
        return None
    return secret_manager_secret(
        name,
        WEBHOOK_APP_KEY_SECRET,
        app.private_key,
        loaded.secret("garo:github.webhookApp.privateKey"),
        config.project,
        dict(config.resource_labels),
        parent,
    )
