"""Read the stack's configuration the way ``garo validate`` does.

The Pulumi engine hands the program its config as strings (objects as JSON)
with decrypted secrets and a list of secret keys. We rebuild the mapping that
``parse_stack_config`` validates, so the program, the agent and ``garo
validate`` share one schema. Secret leaves (``privateKey``, ``webhookSecret``,
``token``) of a secret key are swapped for ``{secure: ...}`` markers before
validation, and their values are kept aside as ``pulumi.Output.secret`` so
they stay encrypted in the state and masked in every output.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from scaler.config import SECRET_KEYS, ConfigError, RunnerGroup, StackConfig, parse_stack_config

# Top-level keys whose values are strings even when they look like numbers
# (a cost center "1234" must not become the integer 1234).
# The portal outputs' schema version (docs/portal-outputs.schema.json). Version 2: hubs no
# longer report deadLetterTopic (each department has its own dead letters) and stacks report
# which GitHub Apps they use; AWS departments were added without changing GCP's fields.
PORTAL_VERSION = 2


def portal_group(group: RunnerGroup, image: str) -> dict[str, Any]:
    """A group's portal fields every cloud shares; each department adds where its pool lives (MIG, ASG)."""
    return {
        "name": group.name,
        "labels": list(group.labels),
        "runnerGroup": group.runner_group,
        "repositories": list(group.repositories),
        "min": group.min,
        "max": group.max,
        "machineType": group.machine_type,
        "image": image,
        "spot": group.spot,
        "fallbackOnDemand": group.spot and group.fallback_on_demand,
        "warmPool": {"size": group.warm_pool.size, "schedule": group.warm_pool.schedule},
        "standbyPool": {"size": group.standby_pool.size, "mode": group.standby_pool.mode},
        "timeToStart": group.time_to_start,
        "timeToLive": group.time_to_live,
    }


def portal_document(kind: str, config: StackConfig, stack: str, **own: Any) -> dict[str, Any]:
    """A stack's ``portal`` output (docs/portal-outputs.schema.json): the fields every hub and department
    shares, with the kind's and the cloud's `own` (a department's network, groups, scaler...)."""
    return {
        "version": PORTAL_VERSION,
        "kind": kind,
        "stack": stack,
        "cloud": config.cloud,
        "region": config.region,
        "project": config.project,
        "github": github_portal(config),
        **own,
        "costLabels": dict(config.resource_labels),
    }


def github_portal(config: StackConfig) -> dict[str, Any]:
    """Which GitHub App a stack uses, by id (never a secret): sharing between departments shows here."""
    github = config.github
    out: dict[str, Any] = {"org": github.org}
    if github.runner_app is not None:
        app = github.runner_app
        out["runnerApp"] = {
            "appId": app.app_id,
            "installationId": app.installation_id,
            "scope": app.scope,
            "repositories": list(app.repositories),
            "sharedWith": list(app.shared_with),
        }
    elif github.token is not None:
        out["token"] = True
    if github.webhook_app is not None:
        out["webhookApp"] = {"appId": github.webhook_app.app_id, "installationId": github.webhook_app.installation_id}
    return out


_STRING_KEYS = frozenset(
    {"garo:kind", "garo:cloud", "garo:region", "garo:department", "garo:costCenter", "garo:project", "garo:scalerImage"}
    | {"garo:hubTopic", "garo:hubStack", "garo:awsIdentityCert", "gcp:project", "gcp:region", "aws:region"}
)


@dataclass(frozen=True)
class LoadedStack:
    """The validated config plus the secret values it refers to (as Pulumi secrets)."""

    config: StackConfig
    stack: str
    # The validated mapping, secret values replaced by markers: safe to show and to hand on.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    secrets: Mapping[str, pulumi.Output[str]] = field(default_factory=dict, repr=False)

    def secret(self, path: str) -> pulumi.Output[str] | None:
        """The Pulumi secret behind e.g. ``garo:github.privateKey``, if the stack set one."""
        return self.secrets.get(path)


def _decode(key: str, value: Any) -> Any:
    if not isinstance(value, str) or key in _STRING_KEYS:
        return value
    text = value.strip()
    if text[:1] in ("{", "[") or text in ("true", "false") or text.lstrip("-").isdigit():
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _take_secrets(value: Any, path: str, found: dict[str, pulumi.Output[str]]) -> Any:
    """Replace secret leaves by markers, collecting their values as Pulumi secrets."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}"
            if key in SECRET_KEYS and isinstance(item, str):
                found[where] = pulumi.Output.secret(item)
                out[key] = {"secure": "[secret]"}
            else:
                out[key] = _take_secrets(item, where, found)
        return out
    if isinstance(value, list):
        return [_take_secrets(item, f"{path}[{i}]", found) for i, item in enumerate(value)]
    return value


def config_keys() -> list[str]:
    """Every config key the engine (or ``garo plan``) gave this program."""
    return sorted(set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env()))


def load() -> LoadedStack:
    """Read, un-secret and validate the stack config; a bad config stops the program."""
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    raw: dict[str, Any] = {}
    secrets: dict[str, pulumi.Output[str]] = {}
    for key in config_keys():
        value = _decode(key, runtime_config.get_config(key))
        if key in secret_keys or runtime_config.is_config_secret(key):
            if isinstance(value, (Mapping, list)):
                # Only the secret leaves are swapped: a plaintext `privateKey` in a
                # non-secret key still reaches the schema and is rejected there.
                value = _take_secrets(value, key, secrets)
            else:  # a whole secret value, e.g. gcp:credentials or gcp:accessToken
                secrets[key] = pulumi.Output.secret(str(value))
                value = {"secure": "[secret]"}
        raw[key] = value
    stack = pulumi.get_stack()
    try:
        config = parse_stack_config(raw, f"Pulumi.{stack}.yaml", deploying=True)
    except ConfigError as exc:
        raise pulumi.RunError(str(exc)) from None
    if config.cloud == "gcp" and not config.project:
        raise pulumi.RunError(f"Pulumi.{stack}.yaml: gcp:project (or garo:project) is required for a GCP stack")
    return LoadedStack(config=config, stack=stack, raw=raw, secrets=secrets)


#: Garo keys the agent gets another way: the identity certificate is a file (GARO_JIT_AWS_CERT_FILE), and
#: a second copy would only eat into EC2's 16 KB of user data.
_NOT_FOR_SCALER = frozenset({"garo:awsIdentityCert"})


def for_scaler(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What the scaler needs of the stack config: Garo's keys and where it runs, no provider credentials."""
    return {
        k: v
        for k, v in raw.items()
        if (k.startswith("garo:") and k not in _NOT_FOR_SCALER) or k in ("gcp:project", "gcp:region", "aws:region")
    }


def name_for(base: str, limit: int) -> str:
    """Fit a cloud name into ``limit`` characters, keeping it unique with a short hash."""
    if len(base) <= limit:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return f"{base[: limit - 7].rstrip('-')}-{digest}"
