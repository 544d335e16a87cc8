"""The routing table: which department and runner group a queued job belongs to.

Department stacks produce it (:func:`routing_document` turns validated
``StackConfig`` objects into the document); the webhook reads it with
:func:`load_routing_table`, and ``garo validate --routes`` checks it in CI with
the same code, so a table the webhook would refuse never gets merged. A hub
stack's static ``garo:hub.routes`` are entries of this document, which is why
it is part of the configuration package (and why it imports only the schema's
model and reader, never the package as a whole).

Document (JSON or YAML)::

    version: 1
    departments:
      - name: data                 # department (the bus attribute)
        org: octo-org              # GitHub organisation (case-insensitive)
        groups:
          - name: gpu              # runner group (the bus attribute)
            labels: [self-hosted, linux, x64, gpu]
            repositories: [octo-org/ml, notebooks]   # optional: full names or bare names
            runnerGroup: Default   # optional, informational

Matching follows GitHub: a runner can take a job when the job's ``runs-on``
labels are a subset of the runner's labels (case-insensitively). A job may fit
several groups (``runs-on: [self-hosted]`` fits all); the closest fit (fewest
labels, then table order) wins, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scaler.config.model import LABEL_RE, NAME_RE, ConfigError, Issue, StackConfig, labels_collide
from scaler.config.reader import read_document

# Same rule as department and group names in scaler.config: they become bus
# attributes, cloud labels and parts of instance names.


@dataclass(frozen=True)
class Route:
    department: str
    org: str
    group: str
    labels: frozenset[str]
    repositories: frozenset[str] = frozenset()
    runner_group: str = "Default"

    def allows(self, org: str, repository: str) -> bool:
        """True if the job's org and repository (``owner/name``) may use this group."""
        if org.lower() != self.org:
            return False
        if not self.repositories:
            return True
        full = repository.lower()
        return full in self.repositories or full.partition("/")[2] in self.repositories


@dataclass(frozen=True)
class Decision:
    """``routed`` (route set), ``github-hosted`` (not ours) or ``unmatched`` (ours, but no group fits)."""

    outcome: Literal["routed", "github-hosted", "unmatched"]
    route: Route | None = None


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[Route, ...]

    def match(self, org: str, repository: str, labels: Iterable[str]) -> Decision:
        wanted = frozenset(label.lower() for label in labels)
        if not wanted:  # an empty set fits every group, but no runner would be asked for it
            return Decision("unmatched")
        fits = [r for r in self.routes if r.allows(org, repository) and wanted <= r.labels]
        if fits:
            return Decision("routed", min(fits, key=lambda r: len(r.labels)))
        if "self-hosted" in wanted:
            return Decision("unmatched")
        # No group has these labels and the job did not ask for a self-hosted
        # runner: `ubuntu-latest` and friends run on GitHub's machines.
        return Decision("github-hosted")


def parse_routing_table(document: Any, source: str = "routing table") -> RoutingTable:
    """Validate a routing document; raise ConfigError naming every problem's key path."""
    issues: list[Issue] = []

    def fail(path: str, message: str) -> None:
        issues.append(Issue(path, message))

    if not isinstance(document, Mapping):
        raise ConfigError([Issue("(root)", "expected a mapping with `version` and `departments`")], source)
    for key in document:
        if key not in ("version", "departments"):
            fail(str(key), "unknown key (allowed: departments, version)")
    if document.get("version") != 1:
        fail("version", f"expected 1, got {document.get('version')!r}")
    departments = document.get("departments")
    if not isinstance(departments, list) or not departments:
        fail("departments", "expected a non-empty list of departments")
        departments = []
    routes: list[Route] = []
    seen_departments: set[str] = set()
    for i, dept in enumerate(departments):
        path = f"departments[{i}]"
        if not isinstance(dept, Mapping):
            fail(path, "expected a mapping")
            continue
        for key in dept:
            if key not in ("name", "org", "groups"):
                fail(f"{path}.{key}", "unknown key (allowed: groups, name, org)")
        name, org = dept.get("name"), dept.get("org")
        if not isinstance(name, str) or not NAME_RE.match(name):
            fail(f"{path}.name", f"expected a lowercase name of at most 20 characters, got {name!r}")
            name = ""
        elif name in seen_departments:
            fail(f"{path}.name", f"duplicate department {name!r}")
        seen_departments.add(str(name))
        if not isinstance(org, str) or not org:
            fail(f"{path}.org", "is required (the GitHub organisation)")
            org = ""
        groups = dept.get("groups")
        if not isinstance(groups, list) or not groups:
            fail(f"{path}.groups", "expected a non-empty list of runner groups")
            groups = []
        seen_groups: set[str] = set()
        for j, group in enumerate(groups):
            route = _parse_group(group, f"{path}.groups[{j}]", name, org, fail)
            if route is not None:
                if route.group in seen_groups:
                    fail(f"{path}.groups[{j}].name", f"duplicate group {route.group!r}")
                seen_groups.add(route.group)
                routes.append(route)
    _check_prefixes(sorted(seen_departments - {""}), fail)
    _check_ambiguity(routes, fail)
    if issues:
        raise ConfigError(issues, source)
    return RoutingTable(tuple(routes))


def _parse_group(group: Any, path: str, department: str, org: str, fail: Any) -> Route | None:
    if not isinstance(group, Mapping):
        fail(path, "expected a mapping")
        return None
    for key in group:
        if key not in ("name", "labels", "repositories", "runnerGroup"):
            fail(f"{path}.{key}", "unknown key (allowed: labels, name, repositories, runnerGroup)")
    name, labels, repos = group.get("name"), group.get("labels"), group.get("repositories", [])
    ok = True
    if not isinstance(name, str) or not NAME_RE.match(name):
        fail(f"{path}.name", f"expected a lowercase name of at most 20 characters, got {name!r}")
        ok = False
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and LABEL_RE.match(x) for x in labels):
        fail(f"{path}.labels", f"expected a non-empty list of runner labels, got {labels!r}")
        ok = False
    elif "self-hosted" not in {x.lower() for x in labels}:
        fail(f"{path}.labels", "must include 'self-hosted' (GitHub adds it to every self-hosted runner)")
        ok = False
    if not isinstance(repos, list) or not all(isinstance(x, str) and x for x in repos):
        fail(f"{path}.repositories", f"expected a list of repository names, got {repos!r}")
        ok = False
    runner_group = group.get("runnerGroup", "Default")
    if not isinstance(runner_group, str) or not runner_group:
        fail(f"{path}.runnerGroup", f"expected a non-empty string, got {runner_group!r}")
        ok = False
    if not ok or not department or not org:
        return None
    assert isinstance(name, str) and isinstance(labels, list) and isinstance(repos, list)
    return Route(
        department=department,
        org=org.lower(),
        group=name,
        labels=frozenset(x.lower() for x in labels),
        repositories=frozenset(x.lower() for x in repos),
        runner_group=str(runner_group),
    )


def _check_prefixes(departments: Sequence[str], fail: Any) -> None:
    """``data`` and ``data-eng`` cannot share a table: their VM and runner names overlap (``garo-data-eng-…``)."""
    for name in departments:
        for other in departments:
            if other.startswith(f"{name}-"):
                fail(
                    "departments",
                    f"department {other!r} starts with '{name}-': instance names garo-{other}-<group>-<job> "
                    f"can also be garo-{name}-<group>-<job>, so {name!r} could manage {other!r}'s VMs; rename one",
                )


def _check_ambiguity(routes: Sequence[Route], fail: Any) -> None:
    """Two groups open to the same repositories whose labels collide (see labels_collide) cannot be told apart."""
    for i, a in enumerate(routes):
        for b in routes[i + 1 :]:
            shared_repos = not a.repositories or not b.repositories or bool(a.repositories & b.repositories)
            if a.org == b.org and shared_repos and labels_collide(a.labels, b.labels):
                fail(
                    "departments",
                    f"{a.department}/{a.group} {sorted(a.labels)} and {b.department}/{b.group} {sorted(b.labels)} "
                    "collide for the same repositories: GitHub could run one's jobs on the other's runners",
                )


def load_routing_table(path: str | Path) -> RoutingTable:
    """Read a JSON or YAML routing table; raise ConfigError with key paths."""
    document = read_document(path, "JSON or YAML")
    return parse_routing_table(document, str(path))


def routing_document(configs: Sequence[StackConfig]) -> dict[str, Any]:
    """The routing document for validated department stacks (what the hub deploys)."""
    departments = [
        {
            "name": c.department,
            "org": c.github.org,
            "groups": [
                {
                    "name": g.name,
                    "labels": list(g.labels),
                    "repositories": list(g.repositories),
                    "runnerGroup": g.runner_group,
                }
                for g in c.groups
            ],
        }
        for c in configs
        if c.kind == "department"
    ]
    return {"version": 1, "departments": departments}
