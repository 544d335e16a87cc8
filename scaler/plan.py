"""``garo plan``: what a stack file would make Pulumi declare, offline and reviewable.

It validates the file with the one schema, then runs the real Pulumi program
(infra/) under Pulumi's mocks with the stack's config injected the way the
engine would (objects as JSON, secure values as secrets), and prints every
resource sorted by type and name with its key properties, or everything as
JSON. Secrets are never decrypted (we have no key): they appear as
``[secret]``. The output is deterministic, so CI can diff it in a PR.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scaler.config import StackConfig, load_stack_file

if TYPE_CHECKING:
    from infra.plan_mocks import Declared
from scaler.config.routing import routing_document

# Per resource type, the inputs a reviewer looks at first (the JSON has all of them).
KEY_PROPERTIES: dict[str, tuple[str, ...]] = {
    "InstanceTemplate": ("machineType", "scheduling.provisioningModel", "disks[0].sourceImage", "labels.garo-group"),
    "RegionInstanceGroupManager": (
        "name",
        "targetSize",
        "targetSuspendedSize",
        "targetStoppedSize",
        "updatePolicy.type",
    ),
    "Subscription": ("name", "topic", "filter", "deadLetterPolicy.deadLetterTopic"),
    "Firewall": ("name", "direction", "sourceRanges", "allows", "denies"),
    "IAMMember": ("role", "member", "condition.title"),
    "TopicIAMMember": ("topic", "role", "member"),
    "SubscriptionIAMMember": ("subscription", "role", "member"),
    "SecretIamMember": ("secretId", "role", "member"),
    "ServiceIamMember": ("name", "role", "member"),
    "IAMCustomRole": ("roleId", "permissions"),
    "Subnetwork": ("name", "ipCidrRange", "privateIpGoogleAccess"),
    "Service": ("name", "ingress", "template.serviceAccount"),
    "SecretVersion": ("secret", "secretData"),
    # AWS departments
    "Vpc": ("cidrBlock",),
    "Subnet": ("availabilityZone", "cidrBlock", "mapPublicIpOnLaunch"),
    "SecurityGroup": ("name", "ingress"),
    "LaunchTemplate": ("name", "instanceType", "imageId", "metadataOptions.httpTokens"),
    "Group": ("name", "minSize", "maxSize", "warmPool.poolState", "mixedInstancesPolicy.instancesDistribution"),
    "FlowLog": ("trafficType", "logDestinationType"),
    # Cloud Run jobs and Cloud Scheduler jobs (the redelivery sweeper): what runs, as whom, when.
    "Job": ("name", "schedule", "template.template.serviceAccount", "template.template.containers[0].args"),
    "JobIamMember": ("name", "role", "member"),
    "AlertPolicy": ("displayName",),
}
DEFAULT_KEYS = ("name", "accountId", "secretId")


@dataclass(frozen=True)
class Declaration:
    """What the program declared, sorted by type and name, secret values still in it.

    Only :func:`masked` turns it into something printable; keeping the run and
    the masking apart is what lets the secret-leak tests look for a secret in
    everything the program produced, with the masking as the one gate.
    """

    stack: str
    resources: list[Declared]
    outputs: dict[str, tuple[Any, bool]]  # name -> (value, is_secret)


@dataclass(frozen=True)
class Plan:
    """A declaration with every secret shown as ``[secret]``: what ``garo plan`` prints."""

    stack: str
    resources: list[dict[str, Any]]
    outputs: dict[str, Any]


def stack_name(path: Path) -> str:
    name = path.name
    return name[len("Pulumi.") : -len(".yaml")] if name.startswith("Pulumi.") and name.endswith(".yaml") else path.stem


def engine_config(document: Mapping[str, Any], secret_values: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The config as the engine hands it to a program: strings, JSON for objects, secure values revealed."""
    strings: dict[str, str] = {}
    secret_keys: list[str] = []

    def reveal(value: Any, path: str) -> tuple[Any, bool]:
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            return secret_values.get(path, f"[secret {path}]"), True
        if isinstance(value, Mapping):
            pairs = {k: reveal(v, f"{path}.{k}") for k, v in value.items()}
            return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
        if isinstance(value, list):
            items = [reveal(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return [v for v, _ in items], any(s for _, s in items)
        return value, False

    for key, value in document.items():
        plain, secret = reveal(value, str(key))
        strings[str(key)] = plain if isinstance(plain, str) else json.dumps(plain)
        if secret:
            secret_keys.append(str(key))
    return strings, secret_keys


def referenced_outputs(path: Path, config: StackConfig) -> dict[str, dict[str, Any]]:
    """What stack references would return, from sibling stack files in the same (git-ops) directory."""
    outputs: dict[str, dict[str, Any]] = {}
    project = config.project or "project"
    refs = list(config.hub.department_stacks) if config.hub else []
    if config.hub_stack:
        hub_file = path.with_name(f"Pulumi.{config.hub_stack.split('/')[-1]}.yaml")
        hub_project = (load_stack_file(hub_file).project if hub_file.exists() else None) or project
        topic = f"projects/{hub_project}/topics/garo-workflow-jobs"
        outputs[config.hub_stack] = {"topic": topic, "deadLetterTopic": f"{topic}-dlq"}
    for ref in refs:
        sibling = path.with_name(f"Pulumi.{ref.split('/')[-1]}.yaml")
        if sibling.exists():
            route = routing_document([load_stack_file(sibling)])["departments"][0]
        else:
            route = {"name": ref.split("/")[-1], "org": config.github.org, "groups": []}
        name = ref.split("/")[-1]
        outputs[ref] = {"route": route, "subscription": f"projects/{project}/subscriptions/garo-{name}-jobs"}
    return outputs


def declare(path: str | Path, secret_values: Mapping[str, str] | None = None) -> Declaration:
    """Validate and run the stack offline. Raises ConfigError (bad file) or pulumi.RunError."""
    from infra.plan_mocks import PlannedCloud, run_program  # late: imports Pulumi

    path = Path(path)
    config = load_stack_file(path)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))["config"]
    strings, secret_keys = engine_config(document, secret_values or {})
    stack = stack_name(path)
    cloud = PlannedCloud(config.project or "project", config.region, referenced_outputs(path, config))
    declared, outputs = run_program(strings, secret_keys, stack, cloud)
    return Declaration(stack, sorted(declared, key=lambda d: (d.type, d.name)), dict(outputs))


def masked(declaration: Declaration) -> Plan:
    """The printable plan: inputs as the mocks masked them, secret outputs as ``[secret]``."""
    resources = [
        {
            "type": d.type,
            "name": d.name,
            "parent": d.parent,
            "custom": d.custom,
            "read": d.read,
            "ignoreChanges": d.ignore_changes,
            "inputs": d.inputs,
        }
        for d in declaration.resources
    ]
    outputs = {k: ("[secret]" if secret else value) for k, (value, secret) in sorted(declaration.outputs.items())}
    return Plan(stack=declaration.stack, resources=resources, outputs=outputs)


def plan(path: str | Path, secret_values: Mapping[str, str] | None = None) -> Plan:
    """Validate and run the stack offline, masked. Raises ConfigError (bad file) or pulumi.RunError."""
    return masked(declare(path, secret_values))


def _pick(inputs: Any, dotted: str) -> Any:
    for part in dotted.replace("[", ".[").split("."):
        if part.startswith("[") and isinstance(inputs, list):
            index = int(part[1:-1])
            inputs = inputs[index] if index < len(inputs) else None
        elif isinstance(inputs, Mapping):
            inputs = inputs.get(part)
        else:
            return None
    return inputs


def render_json(result: Plan) -> str:
    return (
        json.dumps(
            {"stack": result.stack, "resources": result.resources, "outputs": result.outputs}, indent=2, sort_keys=True
        )
        + "\n"
    )


def render_table(result: Plan) -> str:
    """One line per custom resource: short type, name, key properties (ignored fields flagged)."""
    lines = [f"stack {result.stack}: {sum(r['custom'] for r in result.resources)} resources", ""]
    for r in result.resources:
        if not r["custom"]:
            continue
        kind = r["type"].split(":")[-1]
        module = r["type"].split(":")[1].split("/")[0]
        props = []
        for key in KEY_PROPERTIES.get(kind, DEFAULT_KEYS):
            value = _pick(r["inputs"], key)
            if value is not None:
                props.append(f"{key}={json.dumps(value, sort_keys=True)}")
        if r["ignoreChanges"]:
            props.append(f"ignoreChanges={','.join(r['ignoreChanges'])}")
        lines.append(f"{module + '.' + kind:<40} {r['name']:<36} {' '.join(props)}")
    lines += ["", "outputs:"]
    lines += [f"  {k} = {json.dumps(v, sort_keys=True)}" for k, v in result.outputs.items()]
    return "\n".join(lines) + "\n"
