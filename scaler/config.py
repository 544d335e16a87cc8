"""The one configuration schema of Garo.

A department (or hub) stack is described by ``Pulumi.<stack>.yaml``. The Pulumi
program (``infra/``), the in-cluster agent (``scaler.agent``) and ``garo
validate`` all read it through :func:`load_stack_file` / :func:`parse_stack_config`
so that a mistake caught by one is caught by all. Every error names the key path
(``garo:groups[1].max``) because the people reading the error are reviewing a
pull request, not a stack trace.

Keys live in the ``garo:`` namespace; provider keys (``gcp:project``,
``aws:region``) are passed through untouched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

NAMESPACE = "garo"
Cloud = Literal["gcp", "aws", "local"]
StackKind = Literal["hub", "department"]

# GCP and AWS machine families Garo knows how to size runners for. An unknown
# family is almost always a typo ("n2-standrad-4") that would only fail at
# `pulumi up` time, after review.
GCP_MACHINE_FAMILIES = frozenset(
    {
        "e2",
        "n1",
        "n2",
        "n2d",
        "n4",
        "c2",
        "c2d",
        "c3",
        "c3d",
        "c4",
        "c4a",
        "c4d",
        "t2a",
        "t2d",
        "m1",
        "m3",
        "a2",
        "a3",
        "g2",
        "h3",
    }
)
AWS_INSTANCE_FAMILIES = frozenset(
    {
        "t3",
        "t3a",
        "t4g",
        "m5",
        "m5a",
        "m6i",
        "m6a",
        "m6g",
        "m7i",
        "m7a",
        "m7g",
        "c5",
        "c5a",
        "c6i",
        "c6a",
        "c6g",
        "c7i",
        "c7a",
        "c7g",
        "r6i",
        "r7i",
        "g5",
        "g6",
    }
)

_GCP_MACHINE_TYPE_RE = re.compile(
    r"^[a-z0-9]+-((standard|highmem|highcpu|megamem|ultramem|highgpu|megagpu|ultragpu)-\d+(-lssd)?|micro|small|medium|custom-\d+-\d+)$"
)
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_CLOUD_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_ZONE_SUFFIX_RE = re.compile(r"^[a-z]$")
_TOPIC_RE = re.compile(r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$")
_STACK_REF_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
# Keys whose value must never be plaintext in a stack file.
SECRET_KEYS = ("privateKey", "webhookSecret", "token")
# Cron-like office-hours windows: "Mon-Fri 07:00-19:00 Europe/Amsterdam".
_SCHEDULE_RE = re.compile(
    r"^(?P<days>(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})(\s+(?P<tz>[A-Za-z_]+(/[A-Za-z_+-]+)*))?$"
)
# Labels GitHub gives every self-hosted runner; they do not distinguish groups.
GENERIC_RUNNER_LABELS = frozenset({"self-hosted", "linux", "x64", "arm64", "windows", "macos"})


@dataclass(frozen=True)
class Issue:
    """One problem in a stack file, located by its key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """Raised with every problem found, not just the first."""

    def __init__(self, issues: Sequence[Issue], source: str = "stack config") -> None:
        self.issues = list(issues)
        self.source = source
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"{source}: {len(self.issues)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Secret:
    """A reference to a secret: a Pulumi secure value or a Secret Manager name.

    The value itself is never held here; ``repr`` is safe to log.
    """

    kind: Literal["pulumi", "secret-manager", "env", "file"]
    ref: str

    def __repr__(self) -> str:
        return f"Secret(kind={self.kind!r})"


@dataclass(frozen=True)
class WarmPool:
    size: int = 0
    # Optional office-hours window during which `size` applies; outside it the
    # warm pool is `off_hours_size`.
    schedule: str | None = None
    off_hours_size: int = 0


@dataclass(frozen=True)
class StandbyPool:
    size: int = 0
    mode: Literal["suspended", "stopped"] = "suspended"


@dataclass(frozen=True)
class RunnerGroup:
    name: str
    labels: tuple[str, ...]
    runner_group: str = "Default"
    runner_group_id: int = 1
    repositories: tuple[str, ...] = ()
    machine_type: str = "e2-standard-4"
    image_family: str = "garo-runner-x64"
    disk_gb: int = 50
    spot: bool = False
    fallback_on_demand: bool = True
    zones: tuple[str, ...] = ()
    min: int = 0
    max: int = 10
    warm_pool: WarmPool = field(default_factory=WarmPool)
    standby_pool: StandbyPool = field(default_factory=StandbyPool)
    time_to_start: int = 600
    time_to_live: int = 12 * 3600

    @property
    def custom_labels(self) -> frozenset[str]:
        """Labels that select this group (everything beyond the generic ones)."""
        return frozenset(label.lower() for label in self.labels) - GENERIC_RUNNER_LABELS


@dataclass(frozen=True)
class GitHubSettings:
    org: str
    api_url: str = "https://api.github.com"
    app_id: int | None = None
    installation_id: int | None = None
    private_key: Secret | None = None
    webhook_secret: Secret | None = None
    token: Secret | None = None


@dataclass(frozen=True)
class NetworkSettings:
    cidr: str
    iap_ssh: bool = False


@dataclass(frozen=True)
class HubSettings:
    webhook_image: str = "ghcr.io/garo/webhook:latest"
    department_stacks: tuple[str, ...] = ()
    # Departments known without stack references: name -> groups' labels.
    routes: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class StackConfig:
    kind: StackKind
    cloud: Cloud
    region: str
    department: str
    github: GitHubSettings
    cost_center: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    project: str | None = None
    network: NetworkSettings | None = None
    groups: tuple[RunnerGroup, ...] = ()
    hub: HubSettings | None = None
    scaler_image: str = "ghcr.io/garo/scaler:latest"
    reconcile_interval: int = 60
    provider: Mapping[str, Any] = field(default_factory=dict)
    # Where a department finds the hub's topic: a full topic path, or the hub's
    # Pulumi stack (its `topic` output). Neither: the hub's default topic name in
    # this stack's project.
    hub_topic: str | None = None
    hub_stack: str | None = None

    def group(self, name: str) -> RunnerGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"department {self.department!r} has no runner group {name!r}")

    @property
    def resource_labels(self) -> dict[str, str]:
        """Labels every cloud resource of this stack carries."""
        labels = {"garo-department": self.department, "managed-by": "garo"}
        if self.cost_center:
            labels["cost-center"] = self.cost_center
        labels.update(self.labels)
        return labels


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Collects issues while reading a nested mapping, keeping the key path."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            self.fail(f"{path}.{key}", "is required")
            return ""
        if not isinstance(value, str) or not value:
            self.fail(f"{path}.{key}", f"expected a non-empty string, got {value!r}")
            return ""
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 0) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"expected an integer, got {value!r}")
            return default
        if value < minimum:
            self.fail(f"{path}.{key}", f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"expected true or false, got {value!r}")
            return default
        return value

    def strings(self, data: Mapping[str, Any], key: str, path: str, required: bool = False) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{path}.{key}", f"expected a list of strings, got {value!r}")
            return ()
        return tuple(value)

    def secret(self, data: Mapping[str, Any], key: str, path: str) -> Secret | None:
        value = data.get(key)
        where = f"{path}.{key}"
        if value is None:
            return None
        if isinstance(value, str):
            # Never echo the value: it may be the secret itself.
            self.fail(where, "is a plaintext secret; use `pulumi config set --secret` or {secretManager: <name>}")
            return None
        if isinstance(value, Mapping):
            if "secure" in value:
                return Secret("pulumi", "secure")
            for kind, name in (("secretManager", "secret-manager"), ("env", "env"), ("file", "file")):
                if kind in value and isinstance(value[kind], str) and value[kind]:
                    return Secret(name, value[kind])  # type: ignore[arg-type]
        self.fail(where, "expected {secure: ...}, {secretManager: <name>}, {env: <VAR>} or {file: <path>}")
        return None


def _namespaced(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    own: dict[str, Any] = {}
    provider: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, _, name = str(key).partition(":")
        if namespace == NAMESPACE and name:
            own[name] = value
        else:
            provider[str(key)] = value
    return own, provider


def _read_schedule(r: _Reader, schedule: Any, path: str) -> str | None:
    if schedule is None:
        return None
    if not isinstance(schedule, str) or not _SCHEDULE_RE.match(schedule):
        r.fail(path, f"expected e.g. 'Mon-Fri 07:00-19:00 Europe/Amsterdam', got {schedule!r}")
        return None
    return schedule


def _read_group(r: _Reader, raw: Any, path: str, cloud: str) -> RunnerGroup | None:
    data = r.mapping(raw, path)
    if not data:
        if raw is not None and not isinstance(raw, Mapping):
            return None
    allowed = {
        "name",
        "labels",
        "runnerGroup",
        "runnerGroupId",
        "repositories",
        "machineType",
        "imageFamily",
        "diskGb",
        "spot",
        "fallbackOnDemand",
        "zones",
        "min",
        "max",
        "warmPool",
        "standbyPool",
        "timeToStart",
        "timeToLive",
    }
    r.unknown(data, allowed, path)
    name = r.string(data, "name", path)
    if name and not _NAME_RE.match(name):
        r.fail(f"{path}.name", f"{name!r} must be lowercase letters, digits and dashes, at most 20 characters")
    labels = r.strings(data, "labels", path, required=True)
    for i, label in enumerate(labels):
        if not _LABEL_RE.match(label):
            r.fail(f"{path}.labels[{i}]", f"{label!r} is not a valid runner label")
    if labels and "self-hosted" not in {label.lower() for label in labels}:
        r.fail(f"{path}.labels", "must include 'self-hosted' (GitHub adds it to every self-hosted runner)")
    machine_type = r.string(data, "machineType", path, "e2-standard-4" if cloud != "aws" else "m6i.large")
    if machine_type:
        family = machine_type.split(".")[0] if cloud == "aws" else machine_type.split("-")[0]
        known = AWS_INSTANCE_FAMILIES if cloud == "aws" else GCP_MACHINE_FAMILIES
        if cloud != "local" and family not in known:
            r.fail(f"{path}.machineType", f"unknown {cloud} machine family {family!r} in {machine_type!r}")
        elif cloud == "gcp" and not _GCP_MACHINE_TYPE_RE.match(machine_type):
            r.fail(f"{path}.machineType", f"{machine_type!r} is not a GCE machine type like 'n2-standard-8'")
    minimum = r.integer(data, "min", path, 0)
    maximum = r.integer(data, "max", path, 10, minimum=1)
    if maximum < minimum:
        r.fail(f"{path}.max", f"max ({maximum}) is smaller than min ({minimum})")
    warm_raw = r.mapping(data.get("warmPool"), f"{path}.warmPool")
    r.unknown(warm_raw, {"size", "schedule", "offHoursSize"}, f"{path}.warmPool")
    warm = WarmPool(
        size=r.integer(warm_raw, "size", f"{path}.warmPool", 0),
        schedule=_read_schedule(r, warm_raw.get("schedule"), f"{path}.warmPool.schedule"),
        off_hours_size=r.integer(warm_raw, "offHoursSize", f"{path}.warmPool", 0),
    )
    if warm.size > maximum:
        r.fail(f"{path}.warmPool.size", f"warm pool ({warm.size}) is larger than max ({maximum})")
    standby_raw = r.mapping(data.get("standbyPool"), f"{path}.standbyPool")
    r.unknown(standby_raw, {"size", "mode"}, f"{path}.standbyPool")
    mode = standby_raw.get("mode", "suspended")
    if mode not in ("suspended", "stopped"):
        r.fail(f"{path}.standbyPool.mode", f"expected 'suspended' or 'stopped', got {mode!r}")
        mode = "suspended"
    standby = StandbyPool(size=r.integer(standby_raw, "size", f"{path}.standbyPool", 0), mode=mode)
    if standby.size + warm.size > maximum:
        r.fail(
            f"{path}.standbyPool.size", f"warm ({warm.size}) + standby ({standby.size}) pools exceed max ({maximum})"
        )
    zones = r.strings(data, "zones", path)
    time_to_start = r.integer(data, "timeToStart", path, 600, minimum=30)
    time_to_live = r.integer(data, "timeToLive", path, 12 * 3600, minimum=60)
    if time_to_live <= time_to_start:
        r.fail(f"{path}.timeToLive", f"timeToLive ({time_to_live}s) must exceed timeToStart ({time_to_start}s)")
    return RunnerGroup(
        name=name,
        labels=labels,
        runner_group=r.string(data, "runnerGroup", path, "Default"),
        runner_group_id=r.integer(data, "runnerGroupId", path, 1, minimum=1),
        repositories=r.strings(data, "repositories", path),
        machine_type=machine_type,
        image_family=r.string(data, "imageFamily", path, "garo-runner-x64"),
        disk_gb=r.integer(data, "diskGb", path, 50, minimum=10),
        spot=r.boolean(data, "spot", path, False),
        fallback_on_demand=r.boolean(data, "fallbackOnDemand", path, True),
        zones=zones,
        min=minimum,
        max=maximum,
        warm_pool=warm,
        standby_pool=standby,
        time_to_start=time_to_start,
        time_to_live=time_to_live,
    )


def _check_label_collisions(r: _Reader, groups: Sequence[RunnerGroup]) -> None:
    """GitHub gives a job to any runner whose labels are a superset of `runs-on`.

    If one group's custom labels are a subset of another's, a job meant for
    the larger group's labels can never be told apart from the smaller one's
    runners. That is a routing ambiguity a reviewer rarely spots.
    """
    for i, a in enumerate(groups):
        for j, b in enumerate(groups):
            if j <= i or not a.name or not b.name:
                continue
            if a.custom_labels <= b.custom_labels or b.custom_labels <= a.custom_labels:
                r.fail(
                    f"garo:groups[{j}].labels",
                    f"labels of group {b.name!r} {sorted(b.custom_labels)} collide with group {a.name!r} "
                    f"{sorted(a.custom_labels)}: GitHub could hand a job for one to the other's runners",
                )


def parse_stack_config(raw: Mapping[str, Any], source: str = "stack config") -> StackConfig:
    """Validate the ``config:`` mapping of a stack file; raise ConfigError listing every issue."""
    r = _Reader()
    own, provider = _namespaced(raw)
    allowed = {
        "kind",
        "cloud",
        "region",
        "department",
        "costCenter",
        "labels",
        "network",
        "github",
        "groups",
        "hub",
        "scalerImage",
        "reconcileInterval",
        "project",
        "hubTopic",
        "hubStack",
    }
    r.unknown({f"garo:{k}": v for k, v in own.items()}, {f"garo:{k}" for k in allowed}, "config")
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
    if not isinstance(department, str) or not _NAME_RE.match(department):
        r.fail("garo:department", f"expected a lowercase name of at most 20 characters, got {department!r}")
        department = str(department or "")
    labels_raw = r.mapping(own.get("labels"), "garo:labels")
    labels: dict[str, str] = {}
    for key, value in labels_raw.items():
        if not _CLOUD_LABEL_RE.match(str(key)) or not isinstance(value, str) or len(value) > 63:
            r.fail(f"garo:labels.{key}", "cloud labels need lowercase keys and string values of at most 63 characters")
        else:
            labels[str(key)] = value
    cost_center = own.get("costCenter", "")
    if not isinstance(cost_center, str):
        r.fail("garo:costCenter", f"expected a string, got {cost_center!r}")
        cost_center = ""

    gh = r.mapping(own.get("github"), "garo:github")
    r.unknown(gh, {"org", "apiUrl", "appId", "installationId", "privateKey", "webhookSecret", "token"}, "garo:github")
    if not gh:
        r.fail("garo:github", "is required (at least github.org)")
    app_id = gh.get("appId")
    installation_id = gh.get("installationId")
    for key, value in (("appId", app_id), ("installationId", installation_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            r.fail(f"garo:github.{key}", f"expected an integer, got {value!r}")
    api_url = gh.get("apiUrl", "https://api.github.com")
    if not isinstance(api_url, str) or not api_url.startswith(("https://", "http://")):
        r.fail("garo:github.apiUrl", f"expected an http(s) URL, got {api_url!r}")
        api_url = "https://api.github.com"
    github = GitHubSettings(
        org=r.string(gh, "org", "garo:github") if gh else "",
        api_url=api_url.rstrip("/"),
        app_id=app_id if isinstance(app_id, int) else None,
        installation_id=installation_id if isinstance(installation_id, int) else None,
        private_key=r.secret(gh, "privateKey", "garo:github"),
        webhook_secret=r.secret(gh, "webhookSecret", "garo:github"),
        token=r.secret(gh, "token", "garo:github"),
    )
    if github.app_id is not None and github.private_key is None and "privateKey" not in gh:
        r.fail("garo:github.privateKey", "is required when github.appId is set")

    network: NetworkSettings | None = None
    groups: list[RunnerGroup] = []
    hub: HubSettings | None = None
    if kind == "department":
        net = r.mapping(own.get("network"), "garo:network")
        r.unknown(net, {"cidr", "iapSsh"}, "garo:network")
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
        network = NetworkSettings(cidr=cidr, iap_ssh=r.boolean(net, "iapSsh", "garo:network", False))
        raw_groups = own.get("groups")
        if not isinstance(raw_groups, list) or not raw_groups:
            r.fail("garo:groups", "a department needs a non-empty list of runner groups")
            raw_groups = []
        for i, raw_group in enumerate(raw_groups):
            group = _read_group(r, raw_group, f"garo:groups[{i}]", str(cloud))
            if group is not None:
                groups.append(group)
        seen: dict[str, int] = {}
        for i, group in enumerate(groups):
            if group.name in seen:
                r.fail(
                    f"garo:groups[{i}].name",
                    f"duplicate group name {group.name!r} (also garo:groups[{seen[group.name]}])",
                )
            seen.setdefault(group.name, i)
        _check_label_collisions(r, groups)
        hub_topic = own.get("hubTopic")
        if hub_topic is not None and (not isinstance(hub_topic, str) or not _TOPIC_RE.match(hub_topic)):
            r.fail("garo:hubTopic", f"expected 'projects/<project>/topics/<topic>', got {hub_topic!r}")
        hub_stack = own.get("hubStack")
        if hub_stack is not None and (not isinstance(hub_stack, str) or not _STACK_REF_RE.match(hub_stack)):
            r.fail("garo:hubStack", f"expected a stack name like 'acme/garo/hub', got {hub_stack!r}")
        if hub_topic is not None and hub_stack is not None:
            r.fail("garo:hubStack", "set garo:hubTopic or garo:hubStack, not both (they could disagree)")
    else:
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
        hub = HubSettings(
            webhook_image=r.string(hub_raw, "webhookImage", "garo:hub", "ghcr.io/garo/webhook:latest"),
            department_stacks=r.strings(hub_raw, "departmentStacks", "garo:hub"),
            routes=tuple(routes),
        )
        if own.get("groups"):
            r.fail("garo:groups", "a hub stack has no runner groups; put them in department stacks")

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
        groups=tuple(groups),
        hub=hub,
        scaler_image=scaler_image,
        reconcile_interval=reconcile_interval,
        provider=provider,
        hub_topic=own.get("hubTopic") if isinstance(own.get("hubTopic"), str) else None,
        hub_stack=own.get("hubStack") if isinstance(own.get("hubStack"), str) else None,
    )


def _check_routes(r: _Reader, routes: Sequence[Mapping[str, Any]]) -> None:
    """Static routes use the webhook's routing-document entries (see scaler.routing).

    They are checked by the webhook's own parser so a table the webhook would
    refuse fails `garo validate`, with key paths under ``garo:hub.routes``.
    """
    if not routes:
        return
    from scaler.routing import parse_routing_table  # late: scaler.routing imports this module

    try:
        parse_routing_table({"version": 1, "departments": list(routes)}, "garo:hub.routes")
    except ConfigError as exc:
        for issue in exc.issues:
            r.fail(issue.path.replace("departments", "garo:hub.routes", 1), issue.message)


def load_stack_file(path: str | Path) -> StackConfig:
    """Read ``Pulumi.<stack>.yaml`` and validate its ``config:`` block."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([Issue(str(path), "file not found")], str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Issue(str(path), f"not valid YAML: {exc}")], str(path)) from None
    if not isinstance(document, Mapping) or not isinstance(document.get("config"), Mapping):
        raise ConfigError([Issue("config", "the stack file needs a top-level `config:` mapping")], str(path))
    return parse_stack_config(document["config"], str(path))


def check_across_departments(configs: Sequence[StackConfig]) -> list[Issue]:
    """Problems only visible across stacks: overlapping CIDRs, shared labels."""
    issues: list[Issue] = []
    departments = [c for c in configs if c.kind == "department" and c.network]
    for i, a in enumerate(departments):
        for b in departments[i + 1 :]:
            assert a.network and b.network
            if a.department == b.department:
                issues.append(Issue("garo:department", f"{a.department!r} is declared by more than one stack"))
            for x, y in ((a, b), (b, a)):
                # The scaler's IAM condition is a name prefix `garo-<dept>-`:
                # department "data" would be allowed to touch "data-eng"'s VMs.
                if y.department.startswith(f"{x.department}-"):
                    issues.append(
                        Issue(
                            "garo:department",
                            f"{y.department!r} starts with '{x.department}-': the scaler of {x.department!r} "
                            f"could manage {y.department!r}'s VMs (garo-{y.department}-* matches garo-{x.department}-*)",
                        )
                    )
            net_a, net_b = ipaddress.ip_network(a.network.cidr), ipaddress.ip_network(b.network.cidr)
            if net_a.overlaps(net_b):
                issues.append(
                    Issue(
                        "garo:network.cidr",
                        f"{b.department} ({net_b}) overlaps {a.department} ({net_a}); department networks must not overlap",
                    )
                )
            for ga in a.groups:
                for gb in b.groups:
                    if ga.custom_labels <= gb.custom_labels or gb.custom_labels <= ga.custom_labels:
                        issues.append(
                            Issue(
                                "garo:groups.labels",
                                f"{a.department}/{ga.name} {sorted(ga.custom_labels)} and {b.department}/{gb.name} "
                                f"{sorted(gb.custom_labels)} cannot be told apart by labels",
                            )
                        )
    return issues
