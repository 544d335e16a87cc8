"""Instance (and runner) names: the agent's only idempotency key.

Garo keeps no database, so the name of a VM is what stops a redelivered
``queued`` event, or a second agent replica, from creating a second VM for the
same job: clouds refuse (or ignore) a create for a name that exists. A name is
therefore a pure function of ``(department, group, job_id)``; it is also the
GitHub runner name, so events about a runner can be traced back to a VM.

Shape: ``garo-<department>-<group>-<job_id>`` (GCE: ``[a-z]([-a-z0-9]*[a-z0-9])?``,
at most 63 characters). Department and group names are at most 20 characters
each and job ids are int64 (at most 19 digits), so only a long department plus
a long group overflow; then the group part is shortened and a hash of the
full ``department/group`` keeps distinct groups apart. The department part is
never shortened.

Ownership is decided by parsing, never by prefix alone: department ``data``
with group ``eng-gpu`` and department ``data-eng`` with group ``gpu`` both
start ``garo-data-eng-gpu-``, and a prefix test would let ``data`` delete
``data-eng``'s VMs. :func:`parse_name` accepts a name only if exactly one of
the department's own groups produces it (prefix plus a job, replacement or
warm-slot suffix, nothing else); the routing table and ``garo validate``
refuse department names that extend one another (``data``/``data-eng``), the
only case a department's own groups cannot rule out.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_NAME = 63
# GitHub's ids are int64: a larger id is not something GitHub sends.
MAX_JOB_ID = 2**63 - 1
# Longest suffix after the group prefix: a 19-digit job id plus "-r" and a
# two-digit replacement generation.
_MAX_SUFFIX = 23
_MAX_PREFIX = MAX_NAME - _MAX_SUFFIX
_PART_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What GCE (and so every backend) accepts as an instance name.
INSTANCE_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def _check_part(kind: str, value: str) -> None:
    if not _PART_RE.match(value) or len(value) > 20:
        raise ValueError(f"{kind} {value!r} is not a lowercase name of at most 20 characters")


def department_prefix(department: str) -> str:
    """Every instance and runner of a department starts with this."""
    _check_part("department", department)
    return f"garo-{department}-"


@functools.lru_cache(maxsize=4096)  # pure, and called for every name the agent lists
def group_prefix(department: str, group: str) -> str:
    """Every instance of one runner group starts with this (at most 40 characters)."""
    _check_part("group", group)
    prefix = f"{department_prefix(department)}{group}-"
    if len(prefix) <= _MAX_PREFIX:
        return prefix
    digest = hashlib.sha256(f"{department}/{group}".encode()).hexdigest()[:6]
    room = _MAX_PREFIX - len(department_prefix(department)) - len(digest) - 2
    short = group[:room].rstrip("-")
    return f"{department_prefix(department)}{short}-{digest}-"


def valid_job_id(job_id: object) -> bool:
    """True for a job id GitHub could send and :func:`instance_name` accepts: 1..2**63-1.

    An int (not a bool) or its decimal string. The webhook refuses other ids
    with a 400, and the agent can call this before naming a VM, so one forged
    or corrupt record cannot make every pass raise.
    """
    if isinstance(job_id, str):
        if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 19):
            return False
        job_id = int(job_id)
    return isinstance(job_id, int) and not isinstance(job_id, bool) and 0 < job_id <= MAX_JOB_ID


def _job_digits(job_id: int | str) -> str:
    if not valid_job_id(job_id):
        raise ValueError(f"job id {job_id!r} is not a positive 64-bit integer")
    return str(int(job_id))


def instance_name(department: str, group: str, job_id: int | str, generation: int = 0) -> str:
    """The VM (and runner) name for a job; stable across processes and restarts.

    ``generation`` > 0 names a replacement when the first VM for this job was
    taken by another job (GitHub hands a job to any idle matching runner), so
    the job still needs a VM while its first name is in use.
    """
    if not 0 <= generation <= 99:
        raise ValueError(f"generation {generation} out of range 0..99")
    name = f"{group_prefix(department, group)}{_job_digits(job_id)}"
    if generation:
        name += f"-r{generation}"
    assert INSTANCE_NAME_RE.match(name) and len(name) <= MAX_NAME, name
    return name


def warm_name(department: str, group: str, slot: int) -> str:
    """Name of a warm-pool VM not created for any job.

    Slots (not random suffixes) keep replicas idempotent too: two agents topping
    up the same warm pool pick the same lowest free slots.
    """
    if not 0 <= slot < 10_000:
        raise ValueError(f"warm slot {slot} out of range")
    return f"{group_prefix(department, group)}w-{slot}"


def mig_name(department: str, group: str, fallback: bool = False) -> str:
    """The managed instance group of a runner group: ``garo-<department>-<group>[-od]``.

    The one definition both sides use: the Pulumi program declares the MIG
    under this name and the agent addresses it by this name, so they cannot
    drift apart. ``fallback`` names the on-demand MIG behind a spot group.
    Department and group are at most 20 characters each, so the name (at most
    49 characters) always fits GCE's 63.
    """
    _check_part("department", department)
    _check_part("group", group)
    name = f"garo-{department}-{group}" + ("-od" if fallback else "")
    assert INSTANCE_NAME_RE.match(name), name
    return name


@dataclass(frozen=True)
class ParsedName:
    """What a name of ours says: its group, and the job (with replacement generation) or warm slot."""

    group: str
    job_id: int | None = None  # None for a warm-pool VM
    generation: int = 0
    warm_slot: int | None = None


# Exactly what instance_name and warm_name append after the group prefix.
# A warm VM is ``w-<slot>`` (GCE: the agent names it) or ``w-<EC2 instance id without "i-">`` (an
# instance an Auto Scaling group launched into its warm pool: AwsBackend names it after its id).
_SUFFIX_RE = re.compile(
    r"(?P<job>[1-9][0-9]{0,18})(?:-r(?P<gen>[1-9][0-9]?))?"
    r"|w-(?:(?P<slot>0|[1-9][0-9]{0,3})|(?P<ec2>[0-9a-f]{8}|[0-9a-f]{17}))"
)


def parse_name(department: str, groups: Iterable[str], name: str | None) -> ParsedName | None:
    """The one group of ``department`` whose names include ``name``, or None (foreign, malformed or ambiguous).

    Pure: the agent calls it on every VM and runner name it lists, and acts
    only on names it returns something for (so its answers are cached).
    """
    if not name:
        return None
    return _parse_name(department, tuple(groups), name)


@functools.lru_cache(maxsize=65536)
def _parse_name(department: str, groups: tuple[str, ...], name: str) -> ParsedName | None:
    found: list[ParsedName] = []
    for group in groups:
        prefix = group_prefix(department, group)
        if not name.startswith(prefix):
            continue
        suffix = _SUFFIX_RE.fullmatch(name[len(prefix) :])
        if suffix is None:
            continue
        job, generation, slot = suffix.group("job", "gen", "slot")
        if job is not None and not valid_job_id(job):
            continue
        found.append(
            ParsedName(
                group,
                job_id=int(job) if job is not None else None,
                generation=int(generation or 0),
                warm_slot=int(slot) if slot is not None else None,
            )
        )
    return found[0] if len(found) == 1 else None


def is_ours(department: str, runner_name: str | None, groups: Iterable[str] | None = None) -> bool:
    """True for runners/instances of this department; other runners are never touched.

    Pass the department's ``groups``: without them only the prefix is checked,
    which cannot tell ``data``'s names from ``data-eng``'s.
    """
    if groups is not None:
        return parse_name(department, groups, runner_name) is not None
    return bool(runner_name) and str(runner_name).startswith(department_prefix(department))


def group_of(department: str, groups: list[str] | tuple[str, ...], name: str) -> str | None:
    """The group that produced this name, or None (see :func:`parse_name`)."""
    parsed = parse_name(department, groups, name)
    return parsed.group if parsed is not None else None


def job_of(department: str, group: str, name: str) -> int | None:
    """The job id a name was derived from, or None for warm/standby/foreign names."""
    parsed = parse_name(department, (group,), name)
    return parsed.job_id if parsed is not None else None
