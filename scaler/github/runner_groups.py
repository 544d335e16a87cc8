"""Create or update the priority classes' runner groups on GitHub, idempotently.

The agent runs :func:`sync_class_groups` on start-up and every
``SYNC_INTERVAL`` seconds (a stack change restarts the agent, a new repository
matching a class's glob joins at the next sync). Each class group is named
``garo-<department>-<class>`` and made to admit exactly the repositories its
rules name (globs resolved against the organisation's repositories, matched
without regard to case as GitHub does) and, when every rule of the class gives
``workflowRefs``, only those workflow files. Admitting a repository the rules
no longer name is undone by the same sync: the group's lists are set, not added to.

It needs the runner App's ``organization_self_hosted_runners: write``, which
the org-level JIT configs need already (docs/github.md).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scaler.config import StackConfig
from scaler.config.model import PriorityRule
from scaler.github.models import RunnerGroupApi

log = logging.getLogger(__name__)
SYNC_INTERVAL = 3600.0  # seconds between syncs after the first


@dataclass(frozen=True)
class ClassGroups:
    """What the last sync made: each class's runner group id and the repositories it admits (lowercase)."""

    ids: Mapping[str, int] = field(default_factory=dict)
    admitted: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def group_for(self, klass: str, repo: str) -> int | None:
        """The class's group, if it admits the repository (else the job could never take the VM)."""
        if klass in self.ids and repo.lower() in self.admitted.get(klass, frozenset()):
            return self.ids[klass]
        return None


def admitted_repositories(rules: Sequence[PriorityRule], repositories: Mapping[str, int]) -> dict[str, int]:
    """The organisation's repositories (name -> id) that some rule's ``repositories`` glob names."""
    patterns = [p.lower() for rule in rules for p in rule.repositories]
    return {
        name.lower(): rid
        for name, rid in repositories.items()
        if any(fnmatch.fnmatchcase(name.lower(), p) for p in patterns)
    }


def workflow_restriction(rules: Sequence[PriorityRule]) -> list[str]:
    """The workflow refs the group is restricted to; none unless every rule gives some (else it would exclude jobs)."""
    if not rules or not all(rule.workflow_refs for rule in rules):
        return []
    return sorted({ref for rule in rules for ref in rule.workflow_refs})


def sync_class_groups(
    api: RunnerGroupApi, config: StackConfig, wanted: Mapping[str, Sequence[PriorityRule]]
) -> ClassGroups:
    """Make each wanted class's runner group exist and admit exactly its repositories; what was made."""
    if not wanted:
        return ClassGroups()
    repositories = api.repository_ids()
    existing = {g.name: g for g in api.list_runner_groups()}
    ids: dict[str, int] = {}
    admitted: dict[str, frozenset[str]] = {}
    for klass, rules in wanted.items():
        name = f"garo-{config.department}-{klass}"
        repos = admitted_repositories(rules, repositories)
        workflows = workflow_restriction(rules)
        repo_ids = sorted(repos.values())
        if not repos:
            log.warning("runner group %s: no repository of the organisation matches its rules", name)
        group = existing.get(name)
        if group is None:
            ids[klass] = api.create_runner_group(name, repo_ids, workflows)
            log.info("runner group %s created (%d repositories)", name, len(repo_ids))
        else:
            api.update_runner_group(group.id, name, repo_ids, workflows)
            ids[klass] = group.id
        admitted[klass] = frozenset(repos)
    api.watch_runner_groups(sorted(ids.values()))
    return ClassGroups(ids, admitted)
