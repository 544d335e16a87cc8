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

``garo:keepFor`` (seconds, default 1 day; a group's ``keepFor`` overrides it)
bounds how long a VM labelled ``garo-keep`` outlives its time-to-live.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from scaler.config.model import PriorityRule
from scaler.config.reader import Reader

CLASSES = ("deploy", "normal", "background")  # highest first
DEFAULT_CLASS = "normal"
DEFAULT_AGING = 600
MAX_KEEP_FOR = 7 * 24 * 3600
_REPO_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.*-]+$")


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
        r.unknown(data, {"class", "repositories", "workflows"}, path)
        klass = data.get("class")
        if klass not in CLASSES:
            r.fail(f"{path}.class", f"expected one of {', '.join(CLASSES)} (highest first), got {klass!r}")
            continue
        repositories = r.strings(data, "repositories", path)
        workflows = r.strings(data, "workflows", path)
        for j, repo in enumerate(repositories):
            if not _REPO_PATTERN.match(repo):
                r.fail(f"{path}.repositories[{j}]", f"expected 'owner/name' (name may use *), got {repo!r}")
        if not repositories and not workflows:
            r.fail(path, "a rule needs 'repositories' or 'workflows' (else it would match every job)")
            continue
        rules.append(PriorityRule(str(klass), repositories, workflows))
    aging = r.integer(own, "priorityAging", "garo", DEFAULT_AGING, minimum=30)
    return tuple(rules), aging


def read_keep_for(r: Reader, data: Mapping[str, Any], path: str, default: int) -> int:
    """How long past its time-to-live a kept VM may live: at least a minute, at most a week."""
    keep_for = r.integer(data, "keepFor", path, default, minimum=60)
    if keep_for > MAX_KEEP_FOR:
        r.fail(f"{path}.keepFor", f"at most {MAX_KEEP_FOR} seconds (7 days), got {keep_for}")
    return keep_for
