"""Priority classes and the keep limit: who gets the next free VM when a group is at its max.

``garo:priorities`` is a list of rules, each naming a class and the jobs it
covers::

    garo:priorities:
      - class: deploy
        repositories: [acme/api, acme/web]   # full names; ``acme/*`` globs
        workflows: [Deploy]                  # workflow names, as GitHub sends them
      - class: background
        workflows: [Nightly*]

A rule matches a job when every list it gives matches (a rule with only
``workflows`` matches those workflows in any repository); the first rule that
matches wins, and a job no rule matches is ``normal``. Classes rank
``deploy`` > ``normal`` > ``background``. ``garo:priorityAging`` (seconds,
default 600) lifts a waiting job one class per period, so a background job
waits at most two periods before it competes as ``deploy``: none starves.

``garo:priorityRunnerGroups: true`` makes the classes exact on shared labels:
each class other than ``normal`` whose every rule names repositories gets a
runner group of its own, restricted to those repositories (and, with
``workflowRefs``, to those workflow files), and the VM made for a job of that
class registers there (``scaler/agent/classes.py``). Runner groups are
organisation-level, so a repository-scoped runner App cannot have them.

``garo:keepFor`` (seconds, default 1 day; a group's ``keepFor`` overrides it)
bounds how long a VM labelled ``garo-keep`` outlives its time-to-live.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scaler.config.model import GitHubSettings, PriorityRule
from scaler.config.reader import Reader

CLASSES = ("deploy", "normal", "background")  # highest first
DEFAULT_CLASS = "normal"
DEFAULT_AGING = 600
MAX_KEEP_FOR = 7 * 24 * 3600
_REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.*-]+$")
# GitHub's selected_workflows entries: owner/repo/.github/workflows/<file>.y(a)ml@<ref>
_WORKFLOW_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/\.github/workflows/[A-Za-z0-9_.-]+\.ya?ml@\S+$")


def read_priorities(r: Reader, own: Mapping[str, Any]) -> tuple[tuple[PriorityRule, ...], int]:
    """``garo:priorities`` and ``garo:priorityAging``; every mistake names its key path."""
    raw = own.get("priorities")
    rules: list[PriorityRule] = []
    if raw is not None and not isinstance(raw, list):
        r.fail("garo:priorities", f"expected a list of {{class, repositories, workflows}}, got {type(raw).__name__}")
        raw = []
    for i, item in enumerate(raw or []):
        path = f"garo:priorities[{i}]"
        data = r.mapping(item, path)
        if not data:
            r.fail(path, "expected a mapping with 'class' and 'repositories' and/or 'workflows'")
            continue
        r.unknown(data, {"class", "repositories", "workflows", "workflowRefs"}, path)
        klass = data.get("class")
        if klass not in CLASSES:
            r.fail(f"{path}.class", f"expected one of {', '.join(CLASSES)} (highest first), got {klass!r}")
            continue
        repositories = r.strings(data, "repositories", path)
        workflows = r.strings(data, "workflows", path)
        for j, repo in enumerate(repositories):
            if not _REPO_PATTERN.match(repo):
                r.fail(f"{path}.repositories[{j}]", f"expected 'owner/name' (name may use *), got {repo!r}")
        workflow_refs = r.strings(data, "workflowRefs", path)
        for j, ref in enumerate(workflow_refs):
            if not _WORKFLOW_REF.match(ref):
                r.fail(
                    f"{path}.workflowRefs[{j}]",
                    f"expected 'owner/repo/.github/workflows/<file>.yml@<ref>' (GitHub's form), got {ref!r}",
                )
        if workflow_refs and not repositories:
            r.fail(f"{path}.workflowRefs", "needs 'repositories': it restricts that class's runner group")
        if not repositories and not workflows:
            r.fail(path, "a rule needs 'repositories' or 'workflows' (else it would match every job)")
            continue
        rules.append(PriorityRule(str(klass), repositories, workflows, workflow_refs))
    aging = r.integer(own, "priorityAging", "garo", DEFAULT_AGING, minimum=30)
    return tuple(rules), aging


def read_keep_for(r: Reader, data: Mapping[str, Any], path: str, default: int) -> int:
    """How long past its time-to-live a kept VM may live: at least a minute, at most a week."""
    keep_for = r.integer(data, "keepFor", path, default, minimum=60)
    if keep_for > MAX_KEEP_FOR:
        r.fail(f"{path}.keepFor", f"at most {MAX_KEEP_FOR} seconds (7 days), got {keep_for}")
    return keep_for


def read_priority_runner_groups(
    r: Reader, own: Mapping[str, Any], github: GitHubSettings, rules: tuple[PriorityRule, ...]
) -> bool:
    """``garo:priorityRunnerGroups``: only with priorities, and only for organisation-level runners."""
    wanted = r.boolean(own, "priorityRunnerGroups", "garo", False)
    if not wanted:
        return False
    if not rules:
        r.fail("garo:priorityRunnerGroups", "needs garo:priorities (the classes to give runner groups)")
    if github.runner_repository is not None:
        r.fail(
            "garo:priorityRunnerGroups",
            "runner groups are organisation-level: a repository-scoped runnerApp cannot have them",
        )
    if rules and not any(rule.klass != DEFAULT_CLASS and rule.repositories for rule in rules):
        r.fail(
            "garo:priorityRunnerGroups",
            "no class other than normal names repositories: there is no runner group to restrict",
        )
    return wanted
