"""What a stack file means once validated: the dataclasses, the error type, and the rules' constants."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

NAMESPACE = "garo"
Cloud = Literal["gcp", "aws", "local"]
StackKind = Literal["hub", "department"]
RunnerScope = Literal["organization", "repository"]

# GCP and AWS machine families Garo knows how to size runners for. An unknown
# family is almost always a typo ("n2-standrad-4") that would only fail at
# `pulumi up` time, after review.
GCP_MACHINE_FAMILIES = frozenset("e2 n1 n2 n2d n4 c2 c2d c3 c3d c4 c4a c4d t2a t2d m1 m3 a2 a3 g2 h3".split())
AWS_INSTANCE_FAMILIES = frozenset(
    "t3 t3a t4g m5 m5a m6i m6a m6g m7i m7a m7g c5 c5a c6i c6a c6g c7i c7a c7g r6i r7i g5 g6".split()
)

AWS_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
AWS_ZONE_RE = re.compile(r"^[a-z]$")
SSM_PARAMETER_RE = re.compile(r"^/[A-Za-z0-9_.\-/]{1,1010}$")
AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")
GCP_MACHINE_TYPE_RE = re.compile(
    r"^[a-z0-9]+-((standard|highmem|highcpu|megamem|ultramem|highgpu|megagpu|ultragpu)-\d+(-lssd)?|micro|small|medium|custom-\d+-\d+)$"
)
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CLOUD_LABEL_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TOPIC_RE = re.compile(r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$")
REPOSITORY_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
STACK_REF_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
# Keys whose value must never be plaintext in a stack file.
SECRET_KEYS = ("privateKey", "webhookSecret", "token")
# Cron-like office-hours windows: "Mon-Fri 07:00-19:00 Europe/Amsterdam".
SCHEDULE_RE = re.compile(
    r"^(?P<days>(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})(\s+(?P<tz>[A-Za-z_]+(/[A-Za-z_+-]+)*))?$"
)
# Labels GitHub gives every self-hosted runner; they do not distinguish groups.
GENERIC_RUNNER_LABELS = frozenset({"self-hosted", "linux", "x64", "arm64", "windows", "macos"})


def labels_collide(a: Iterable[str], b: Iterable[str]) -> bool:
    """Could GitHub hand a job meant for one label set to runners of the other?

    GitHub gives a job to any runner whose labels include all the job asks for.
    If one group's distinguishing labels are a subset of another's, jobs for the
    smaller set can run on the larger group's runners (another department's VM,
    even). Generic labels (self-hosted, linux, x64, ...) distinguish nothing.
    """
    custom_a = {label.lower() for label in a} - GENERIC_RUNNER_LABELS
    custom_b = {label.lower() for label in b} - GENERIC_RUNNER_LABELS
    return custom_a <= custom_b or custom_b <= custom_a


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
class Ami:
    """Where an AWS group's image comes from (docs/deploy-aws.md).

    ``name``: the newest AMI of this account whose name starts with it (Packer
    names images ``garo-runner-<arch>-<version>-<time>``), resolved at ``pulumi
    up``; ``ssm_parameter``: an SSM parameter holding the AMI id, resolved by
    EC2 at every launch (``resolve:ssm:``), so promoting a tested AMI needs no
    deploy.
    """

    name: str | None = None
    ssm_parameter: str | None = None


DEFAULT_KEEP_FOR = 24 * 3600  # how long past its time-to-live a VM labelled garo-keep may live


@dataclass(frozen=True)
class PriorityRule:
    """Jobs of these repositories and workflows belong to ``klass``; an empty tuple matches any."""

    klass: str
    repositories: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()
    # GitHub's form of a workflow for runner-group restrictions: owner/repo/.github/workflows/f.yml@ref
    workflow_refs: tuple[str, ...] = ()


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
    keep_for: int = DEFAULT_KEEP_FOR
    # AWS: instance types in fallback order (the first is ``machine_type``) and the AMI.
    instance_types: tuple[str, ...] = ()
    ami: Ami | None = None

    @property
    def mixed_instances(self) -> bool:
        """AWS: does this group's ASG need a mixed-instances policy (spot, or several types)?"""
        return self.spot or len(self.instance_types) > 1

    @property
    def custom_labels(self) -> frozenset[str]:
        """Labels that select this group (everything beyond the generic ones)."""
        return frozenset(label.lower() for label in self.labels) - GENERIC_RUNNER_LABELS


@dataclass(frozen=True)
class RunnerApp:
    """A department's own GitHub App: the credential its scaler registers and removes runners with.

    ``scope`` says where runners live and so what a thief of the key reaches
    (docs/security.md): ``organization`` runners go in runner groups and need
    the org-wide "Self-hosted runners" permission, which GitHub does not scope
    to a group; ``repository`` runners live in the department's repository
    and need only that repository's "Administration" permission, on an App
    installed there alone. ``shared_with`` names departments that knowingly
    use the same App (both sides must say so; `garo validate` checks).
    """

    app_id: int
    private_key: Secret | None
    installation_id: int | None = None
    scope: RunnerScope = "repository"
    repositories: tuple[str, ...] = ()
    shared_with: tuple[str, ...] = ()
    #: More Apps with the same scope and installation target: JIT configs are spread over all of them.
    additional: tuple[AppKey, ...] = ()
    #: JIT configs a minute this department may create through each of its Apps (GitHub allows ~180
    #: per App; departments sharing an App must stay under that together: `garo validate` checks;
    #: by default they split it evenly).
    jit_per_minute: int = 180

    @property
    def app_ids(self) -> tuple[int, ...]:
        return (self.app_id, *(a.app_id for a in self.additional))


@dataclass(frozen=True)
class AppKey:
    """One more runner App of a department: its id, key and (optionally) installation."""

    app_id: int
    private_key: Secret | None
    installation_id: int | None = None


@dataclass(frozen=True)
class WebhookApp:
    """The hub's GitHub App: owns the webhook and its delivery log, holds no runner permission.

    Only the redelivery sweeper uses its key (``GET /app/hook/deliveries`` and
    redelivery need the App's JWT); the webhook service itself needs only the
    webhook secret. No department may hold it.
    """

    app_id: int
    private_key: Secret | None
    installation_id: int | None = None


@dataclass(frozen=True)
class GitHubSettings:
    org: str
    api_url: str = "https://api.github.com"
    #: Departments only: the runner credential (a GitHub App), or ``token`` in development.
    runner_app: RunnerApp | None = None
    #: The hub only: the App that owns the webhook (for redelivery).
    webhook_app: WebhookApp | None = None
    #: The hub only: the webhook's HMAC secret.
    webhook_secret: Secret | None = None
    #: Departments, development only: a plain token instead of a runner App.
    token: Secret | None = None

    # The agent authenticates with the runner App; these name its parts.
    @property
    def app_id(self) -> int | None:
        return self.runner_app.app_id if self.runner_app else None

    @property
    def installation_id(self) -> int | None:
        return self.runner_app.installation_id if self.runner_app else None

    @property
    def private_key(self) -> Secret | None:
        return self.runner_app.private_key if self.runner_app else None

    @property
    def runner_repository(self) -> str | None:
        """The repository runners register in, for a repository-scoped runner App."""
        app = self.runner_app
        return app.repositories[0] if app and app.scope == "repository" and app.repositories else None


@dataclass(frozen=True)
class NetworkSettings:
    cidr: str
    iap_ssh: bool = False
    # AWS: availability zones (suffixes like "a") with a private subnet each.
    zones: tuple[str, ...] = ()


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
    # Priority classes when a group is at its max (scaler/config/priorities.py).
    priorities: tuple[PriorityRule, ...] = ()
    priority_aging: int = 600
    # A runner group per class (scaler/agent/classes.py): priorities exact even on shared labels.
    priority_runner_groups: bool = False
    # AWS departments: the region's RSA certificate for instance identity documents (PEM; public).
    aws_identity_cert: str = ""

    def group(self, name: str) -> RunnerGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"department {self.department!r} has no runner group {name!r}")

    @property
    def listed_runner_groups(self) -> tuple[int, ...]:
        """The runner groups whose runners the agent lists (none: a repository's runners, in one listing).

        Organisation-scoped runners are listed per runner group: the department's own, not the org's.
        """
        if self.github.runner_repository:
            return ()
        return tuple(dict.fromkeys(g.runner_group_id for g in self.groups))

    @property
    def resource_labels(self) -> dict[str, str]:
        """Labels every cloud resource of this stack carries."""
        labels = {"garo-department": self.department, "managed-by": "garo"}
        if self.cost_center:
            labels["cost-center"] = self.cost_center
        labels.update(self.labels)
        return labels
