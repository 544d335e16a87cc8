"""A small evaluator of IAM identity policies, enough to ask "may this role do X to that resource?".

It follows AWS's published evaluation logic for one identity policy: an explicit
Deny wins, then any Allow, else the implicit deny. Actions and resources match
with ``*``/``?`` wildcards (case-insensitive actions); conditions support the
operators Garo's policies use (String*, ForAllValues:String*, ArnEquals/Like)
with policy variables substituted from the request context. An operator it does
not know fails the test instead of being ignored.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _match(pattern: str, value: str, case: bool = True) -> bool:
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _substitute(value: str, context: Mapping[str, Any]) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(context.get(m.group(1), "\x00missing")), value)


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    wanted = [_substitute(str(v), context) for v in _listed(expected)]
    qualifier, _, op = operator.rpartition(":")
    present = context.get(key)
    if qualifier == "ForAllValues":
        values = _listed(present) if present is not None else []
        return all(_condition_holds(op, key, expected, {**context, key: v}) for v in values)
    if qualifier:
        raise AssertionError(f"iam_eval does not model {operator}")
    if present is None:
        return op.endswith("NotEquals") or op.endswith("NotLike")
    value = str(present)
    if op in ("StringEquals", "ArnEquals"):
        return value in wanted
    if op in ("StringNotEquals", "ArnNotEquals"):
        return value not in wanted
    if op in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(value, w) for w in wanted)
    if op in ("StringNotLike", "ArnNotLike"):
        return not any(fnmatch.fnmatchcase(value, w) for w in wanted)
    raise AssertionError(f"iam_eval does not model {operator}")


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    if not any(_match(a, request.action, case=False) for a in _listed(statement.get("Action", []))):
        return False
    resources = [_substitute(r, request.context) for r in _listed(statement.get("Resource", []))]
    if not any(_match(r, request.resource) for r in resources):
        return False
    for operator, pairs in statement.get("Condition", {}).items():
        for key, expected in pairs.items():
            if not _condition_holds(operator, key, expected, request.context):
                return False
    return True


def allowed(policy: str | Mapping[str, Any], request: Request) -> bool:
    document = json.loads(policy) if isinstance(policy, str) else policy
    statements = _listed(document["Statement"])
    if any(s["Effect"] == "Deny" and _applies(s, request) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _applies(s, request) for s in statements)
