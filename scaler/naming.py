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
never shortened: ``garo-<department>-`` is how the agent tells its runners
from other departments'.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
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


def _job_digits(job_id: int | str) -> str:
    text = str(job_id)
    if not text.isdigit() or len(text) > 19 or int(text) <= 0:
        raise ValueError(f"job id {job_id!r} is not a positive 64-bit integer")
    return str(int(text))


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


def is_ours(department: str, runner_name: str | None) -> bool:
    """True for runners/instances of this department; other runners are never touched."""
    return bool(runner_name) and str(runner_name).startswith(department_prefix(department))


def group_of(department: str, groups: list[str] | tuple[str, ...], name: str) -> str | None:
    """The group whose prefix this name carries (longest prefix wins: groups ``a`` and ``a-b``)."""
    best: str | None = None
    best_len = -1
    for group in groups:
        prefix = group_prefix(department, group)
        if name.startswith(prefix) and len(prefix) > best_len:
            best, best_len = group, len(prefix)
    return best


def job_of(department: str, group: str, name: str) -> int | None:
    """The job id a name was derived from, or None for warm/standby/foreign names."""
    prefix = group_prefix(department, group)
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :].split("-r", 1)[0]
    return int(rest) if rest.isdigit() else None
