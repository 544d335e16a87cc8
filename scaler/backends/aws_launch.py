"""Many names in one ``RunInstances``: how a batch is formed, tagged, and read back instance by instance.

EC2 tags every instance of one ``RunInstances`` alike, so an instance cannot
carry its own ``Name`` from the call that made it (a ``CreateTags`` per
instance would cost the call the batch saves). Each instance of a batch
has its own launch index instead (``AmiLaunchIndex``: 0, 1, ... in the order
EC2 launched them; a partly fulfilled call fills the lowest indexes). The batch
carries one tag per index, ``garo-launch-<i>``, whose value is the Garo name
and the facts (``garo-job``, ``garo-repo``) of the name at index ``i``; an
instance reads its identity from the tag of its own index. A batch of one is
launched exactly as before batching: ``Name`` and the facts as plain tags.

Limits: 50 user tags per EC2 resource (``aws:`` tags do not count) and 256
characters per tag value. A batch uses 5 bookkeeping tags (``Name``,
``garo-asg``, ``garo-department``, ``garo-jit-bucket``, ``garo-agent-url``) and
leaves 5 for tags written later (``garo-state`` and ``garo-reason`` by the boot
agent, ``garo-keep`` by an operator, ``garo-job`` when a VM is relabelled), so
at most :data:`BATCH_LIMIT` = 40 names share a call. A name whose identity does
not fit one value (a very long repository and further facts), or holds
characters outside the set every AWS service accepts in tags, is launched on
its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_TAGS = 50  # user tags per EC2 resource
TAG_VALUE_LIMIT = 256  # characters per tag value
BOOKKEEPING_TAGS = 5  # Name, garo-asg, garo-department, garo-jit-bucket, garo-agent-url
LATER_TAGS = 5  # room for garo-state, garo-reason, garo-keep, a relabelled garo-job, one spare
BATCH_LIMIT = MAX_TAGS - BOOKKEEPING_TAGS - LATER_TAGS  # names per RunInstances: 40
LAUNCH_TAG_PREFIX = "garo-launch-"
_LAUNCH_TAG_RE = re.compile(r"^garo-launch-(0|[1-9][0-9]{0,2})$")
# What every AWS service accepts in tag values (EC2 accepts more): no space, which separates the fields.
_FIELD_RE = re.compile(r"^[A-Za-z0-9+\-=._:/@]*$")
_FACT_KEY_RE = re.compile(r"^garo-[a-z0-9-]+$")


@dataclass(frozen=True)
class Placement:
    """Where one RunInstances tries: market, instance type, subnet, and the ASG the instance joins."""

    spot: bool
    instance_type: str
    subnet: str
    asg: str


def client_token(name: str, placement: Placement, salt: str = "") -> str:
    """RunInstances' idempotency token (at most 64 ASCII characters) for a name at a placement."""
    key = f"{name}|{placement.spot}|{placement.instance_type}|{placement.subnet}|{salt}"
    return "garo-" + hashlib.sha256(key.encode()).hexdigest()[:48]


def batch_token(names: Sequence[str], placement: Placement, salt: str = "") -> str:
    """The token of a batch: its names in launch order, the placement and the salt.

    A batch of one has the token it had before batching (:func:`client_token`),
    so an instance launched by an older agent is found again by a retry.
    """
    if len(names) == 1:
        return client_token(names[0], placement, salt)
    return client_token(",".join(names), placement, f"batch|{salt}")


def launch_tag_value(name: str, facts: Mapping[str, str]) -> str | None:
    """``<name> <key>=<value> ...``: a name's identity in one tag value; None when it does not fit one."""
    fields = [name] + [f"{k}={v}" for k, v in sorted(facts.items()) if v]
    if any(not _FIELD_RE.match(f) for f in fields) or any(not _FACT_KEY_RE.match(k) for k in facts):
        return None
    value = " ".join(fields)
    return value if len(value) <= TAG_VALUE_LIMIT else None


def launch_identity(tags: Mapping[str, str], launch_index: int | None) -> tuple[str, dict[str, str]] | None:
    """The (name, facts) an instance of a batch was launched for, from the tag of its launch index."""
    if launch_index is None:
        return None
    value = tags.get(f"{LAUNCH_TAG_PREFIX}{launch_index}")
    if not value:
        return None
    name, *pairs = value.split(" ")
    facts = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    return name, {k: v for k, v in facts.items() if _FACT_KEY_RE.match(k)}


def is_launch_tag(key: str) -> bool:
    return bool(_LAUNCH_TAG_RE.match(key))


def batch_name_tag(names: Sequence[str]) -> str:
    """The ``Name`` tag every instance of a batch shares (what the console shows): first name and the count."""
    return names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"


def batches(names: Sequence[str], facts: Mapping[str, Mapping[str, str]], limit: int = BATCH_LIMIT) -> list[list[str]]:
    """Names in launch order, cut into batches of at most ``limit``; a name that fits no tag value goes alone."""
    alone = [[n] for n in names if launch_tag_value(n, facts.get(n, {})) is None]
    shared = [n for n in names if launch_tag_value(n, facts.get(n, {})) is not None]
    return [shared[i : i + limit] for i in range(0, len(shared), max(1, limit))] + alone


def batch_tags(names: Sequence[str], facts: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The per-index identity tags of a batch of two or more names (``garo-launch-<i>``)."""
    out: dict[str, str] = {}
    for index, name in enumerate(names):
        value = launch_tag_value(name, facts.get(name, {}))
        if value is None:  # batches() keeps such names alone
            raise ValueError(f"name {name!r} cannot share a launch")
        out[f"{LAUNCH_TAG_PREFIX}{index}"] = value
    return out


__all__ = [
    "BATCH_LIMIT",
    "LAUNCH_TAG_PREFIX",
    "MAX_TAGS",
    "TAG_VALUE_LIMIT",
    "Placement",
    "batch_name_tag",
    "batch_tags",
    "batch_token",
    "batches",
    "client_token",
    "is_launch_tag",
    "launch_identity",
    "launch_tag_value",
]
