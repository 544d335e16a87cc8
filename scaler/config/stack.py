"""A whole stack file: identity, GitHub, network and groups (departments) or routes (hub)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scaler.config import aws
from scaler.config.credentials import apply_repository_scope, check_secret_projects, read_github
from scaler.config.groups import check_label_collisions, read_group
from scaler.config.model import (
    CLOUD_LABEL_RE,
    DEFAULT_KEEP_FOR,
    NAME_RE,
    STACK_REF_RE,
    TOPIC_RE,
    ConfigError,
    HubSettings,
    Issue,
    NetworkSettings,
    RunnerGroup,
    StackConfig,
)
from scaler.config.priorities import read_keep_for, read_priorities, read_priority_runner_groups
from scaler.config.reader import Reader, namespaced, read_document
from scaler.config.routing import parse_routing_table

ALLOWED_KEYS = frozenset(
    "kind cloud region department costCenter labels network github groups hub scalerImage reconcileInterval "
    "project hubTopic hubStack keepFor priorities priorityAging priorityRunnerGroups awsIdentityCert".split()
)


def parse_stack_config(raw: Mapping[str, Any], source: str = "stack config", *, deploying: bool = False) -> StackConfig:
    """Validate the ``config:`` mapping of a stack file; raise ConfigError listing every issue.

    ``deploying``: the whole stack as ``pulumi up`` gets it (``garo validate``, the program), so
    inputs only the infrastructure needs are required too; the agent re-reads a subset.
    """
    r = Reader()
    own, provider = namespaced(raw)
    r.unknown({f"garo:{k}": v for k, v in own.items()}, {f"garo:{k}" for k in ALLOWED_KEYS}, "config")
    kind = own.get("kind", "department")
    if kind not in ("hub", "department"):
        r.fail("garo:kind", f"expected 'hub' or 'department', got {kind!r}")
        kind = "department"
    cloud = own.get("cloud", "gcp")
    if cloud not in ("gcp", "aws", "local"):
        r.fail("garo:cloud", f"expected 'gcp', 'aws' or 'local', got {cloud!r}")
        cloud = "gcp"
    region = own.get("region") or provider.get(f"{cloud}:region")
    if not isinstance(region, str) or not region:
        r.fail("garo:region", "is required (or set gcp:region / aws:region)")
        region = ""
    project = own.get("project") or provider.get("gcp:project")
    department = own.get("department", "hub" if kind == "hub" else None)
    if not isinstance(department, str) or not NAME_RE.match(department):
        r.fail("garo:department", f"expected a lowercase name of at most 20 characters, got {department!r}")
        department = str(department or "")
    cost_center = own.get("costCenter", "")
    if not isinstance(cost_center, str):
        r.fail("garo:costCenter", f"expected a string, got {cost_center!r}")
        cost_center = ""
    labels = _read_labels(r, own)
    github = read_github(r, own, str(kind))
    check_secret_projects(r, github, project if isinstance(project, str) else None)
    network: NetworkSettings | None = None
    groups: tuple[RunnerGroup, ...] = ()
    hub: HubSettings | None = None
    priorities, priority_aging = read_priorities(r, own)
    priority_runner_groups = read_priority_runner_groups(r, own, github, priorities)
    if kind == "department":
        network, groups = _read_department(r, own, str(cloud))
        groups = apply_repository_scope(r, github, groups)
    else:
        hub = _read_hub(r, own)
    if kind == "department" and cloud == "aws" and not (isinstance(project, str) and project):
        r.fail(
            "gcp:project",
            "is required for an AWS department: the GCP project of its subscription and workload identity pool "
            "(usually the hub's)",
        )
    aws_identity_cert = aws.read_identity_certificate(r, own, str(kind), str(cloud), required=deploying)
    reconcile_interval = r.integer(own, "reconcileInterval", "garo", 60, minimum=5)
    scaler_image = r.string(own, "scalerImage", "garo", "ghcr.io/garo/scaler:latest")
    if r.issues:
        raise ConfigError(r.issues, source)
    return StackConfig(
        kind=kind,
        cloud=cloud,
        region=region,
        department=department,
        github=github,
        cost_center=cost_center,
        labels=labels,
        project=project if isinstance(project, str) else None,
        network=network,
        groups=groups,
        hub=hub,
        scaler_image=scaler_image,
        reconcile_interval=reconcile_interval,
        provider=provider,
        hub_topic=own.get("hubTopic") if isinstance(own.get("hubTopic"), str) else None,
        hub_stack=own.get("hubStack") if isinstance(own.get("hubStack"), str) else None,
        priorities=priorities,
        priority_aging=priority_aging,
        priority_runner_groups=priority_runner_groups,
        aws_identity_cert=aws_identity_cert,
    )


def _read_labels(r: Reader, own: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in r.mapping(own.get("labels"), "garo:labels").items():
        if not CLOUD_LABEL_RE.match(str(key)) or not isinstance(value, str) or len(value) > 63:
            r.fail(f"garo:labels.{key}", "cloud labels need lowercase keys and string values of at most 63 characters")
        else:
            labels[str(key)] = value
    return labels


def _read_department(r: Reader, own: Mapping[str, Any], cloud: str) -> tuple[NetworkSettings, tuple[RunnerGroup, ...]]:
    net = r.mapping(own.get("network"), "garo:network")
    r.unknown(net, {"cidr", "iapSsh", "zones"} if cloud == "aws" else {"cidr", "iapSsh"}, "garo:network")
    cidr = r.string(net, "cidr", "garo:network")
    if cidr:
        try:
            parsed = ipaddress.ip_network(cidr, strict=True)
            if not parsed.is_private:
                r.fail("garo:network.cidr", f"{cidr} is not a private range")
            elif parsed.prefixlen > 28:
                r.fail("garo:network.cidr", f"{cidr} is too small for a runner fleet (at most /28)")
        except ValueError as exc:
            r.fail("garo:network.cidr", f"{cidr!r} is not a valid CIDR: {exc}")
    zones = aws.read_network_zones(r, net, cidr) if cloud == "aws" else ()
    network = NetworkSettings(cidr=cidr, iap_ssh=r.boolean(net, "iapSsh", "garo:network", False), zones=zones)
    if cloud == "aws" and network.iap_ssh:
        r.fail("garo:network.iapSsh", "IAP is GCP's; AWS runners take no ingress (use SSM Session Manager)")
    raw_groups = own.get("groups")
    if not isinstance(raw_groups, list) or not raw_groups:
        r.fail("garo:groups", "a department needs a non-empty list of runner groups")
        raw_groups = []
    keep_for = read_keep_for(r, own, "garo", DEFAULT_KEEP_FOR)
    groups = [
        g for i, raw in enumerate(raw_groups) if (g := read_group(r, raw, f"garo:groups[{i}]", cloud, zones, keep_for))
    ]
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        if group.name in seen:
            r.fail(
                f"garo:groups[{i}].name", f"duplicate group name {group.name!r} (also garo:groups[{seen[group.name]}])"
            )
        seen.setdefault(group.name, i)
    check_label_collisions(r, groups)
    hub_topic = own.get("hubTopic")
    if hub_topic is not None and (not isinstance(hub_topic, str) or not TOPIC_RE.match(hub_topic)):
        r.fail("garo:hubTopic", f"expected 'projects/<project>/topics/<topic>', got {hub_topic!r}")
    hub_stack = own.get("hubStack")
    if hub_stack is not None and (not isinstance(hub_stack, str) or not STACK_REF_RE.match(hub_stack)):
        r.fail("garo:hubStack", f"expected a stack name like 'acme/garo/hub', got {hub_stack!r}")
    if hub_topic is not None and hub_stack is not None:
        r.fail("garo:hubStack", "set garo:hubTopic or garo:hubStack, not both (they could disagree)")
    return network, tuple(groups)


def _read_hub(r: Reader, own: Mapping[str, Any]) -> HubSettings:
    hub_raw = r.mapping(own.get("hub"), "garo:hub")
    r.unknown(hub_raw, {"webhookImage", "departmentStacks", "routes"}, "garo:hub")
    routes = hub_raw.get("routes", [])
    if not isinstance(routes, list) or not all(isinstance(x, Mapping) for x in routes):
        r.fail("garo:hub.routes", "expected a list of route mappings")
        routes = []
    _check_routes(r, routes)
    for key in ("hubTopic", "hubStack"):
        if key in own:
            r.fail(f"garo:{key}", "only department stacks refer to the hub")
    if own.get("groups"):
        r.fail("garo:groups", "a hub stack has no runner groups; put them in department stacks")
    return HubSettings(
        webhook_image=r.string(hub_raw, "webhookImage", "garo:hub", "ghcr.io/garo/webhook:latest"),
        department_stacks=r.strings(hub_raw, "departmentStacks", "garo:hub"),
        routes=tuple(routes),
    )


def _check_routes(r: Reader, routes: Sequence[Mapping[str, Any]]) -> None:
    """Static routes use the webhook's routing-document entries (see scaler.config.routing).

    They are checked by the webhook's own parser so a table the webhook would
    refuse fails `garo validate`, with key paths under ``garo:hub.routes``.
    """
    if not routes:
        return
    try:
        parse_routing_table({"version": 1, "departments": list(routes)}, "garo:hub.routes")
    except ConfigError as exc:
        for issue in exc.issues:
            r.fail(issue.path.replace("departments", "garo:hub.routes", 1), issue.message)


def load_stack_file(path: str | Path) -> StackConfig:
    """Read ``Pulumi.<stack>.yaml`` and validate its ``config:`` block."""
    document = read_document(path)
    if not isinstance(document, Mapping) or not isinstance(document.get("config"), Mapping):
        raise ConfigError([Issue("config", "the stack file needs a top-level `config:` mapping")], str(path))
    return parse_stack_config(document["config"], str(path), deploying=True)
