"""Runner groups: sizes, pools, machine types and labels GitHub routes jobs by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaler.config import aws
from scaler.config.model import (
    DEFAULT_KEEP_FOR,
    GCP_MACHINE_FAMILIES,
    GCP_MACHINE_TYPE_RE,
    LABEL_RE,
    NAME_RE,
    SCHEDULE_RE,
    RunnerGroup,
    StandbyPool,
    WarmPool,
    labels_collide,
)
from scaler.config.priorities import read_keep_for
from scaler.config.reader import Reader


def _read_schedule(r: Reader, schedule: Any, path: str) -> str | None:
    if schedule is None:
        return None
    if not isinstance(schedule, str) or not SCHEDULE_RE.match(schedule):
        r.fail(path, f"expected e.g. 'Mon-Fri 07:00-19:00 Europe/Amsterdam', got {schedule!r}")
        return None
    return schedule


def read_group(
    r: Reader,
    raw: Any,
    path: str,
    cloud: str,
    network_zones: tuple[str, ...] = (),
    keep_for: int = DEFAULT_KEEP_FOR,
) -> RunnerGroup | None:
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
        "keepFor",
        *aws.AWS_ONLY_GROUP_KEYS,
    }
    r.unknown(data, allowed, path)
    name = r.string(data, "name", path)
    if name and not NAME_RE.match(name):
        r.fail(f"{path}.name", f"{name!r} must be lowercase letters, digits and dashes, at most 20 characters")
    labels = r.strings(data, "labels", path, required=True)
    for i, label in enumerate(labels):
        if not LABEL_RE.match(label):
            r.fail(f"{path}.labels[{i}]", f"{label!r} is not a valid runner label")
    if labels and "self-hosted" not in {label.lower() for label in labels}:
        r.fail(f"{path}.labels", "must include 'self-hosted' (GitHub adds it to every self-hosted runner)")
    instance_types: tuple[str, ...] = ()
    if cloud == "aws":
        instance_types = aws.read_instance_types(r, data, path)
        machine_type = instance_types[0] if instance_types else ""
    else:
        aws.reject_aws_keys(r, data, path, cloud)
        machine_type = r.string(data, "machineType", path, "e2-standard-4")
        family = machine_type.split("-")[0]
        if machine_type and cloud != "local" and family not in GCP_MACHINE_FAMILIES:
            r.fail(f"{path}.machineType", f"unknown {cloud} machine family {family!r} in {machine_type!r}")
        elif machine_type and cloud == "gcp" and not GCP_MACHINE_TYPE_RE.match(machine_type):
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
    image_family = r.string(data, "imageFamily", path, "garo-runner-x64")
    group = RunnerGroup(
        name=name,
        labels=labels,
        runner_group=r.string(data, "runnerGroup", path, "Default"),
        runner_group_id=r.integer(data, "runnerGroupId", path, 1, minimum=1),
        repositories=r.strings(data, "repositories", path),
        machine_type=machine_type,
        image_family=image_family,
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
        keep_for=read_keep_for(r, data, path, keep_for),
        instance_types=instance_types,
        ami=aws.read_ami(r, data, path, image_family) if cloud == "aws" else None,
    )
    if cloud == "aws":
        aws.check_group(r, group, path, network_zones)
    return group


def check_label_collisions(r: Reader, groups: Sequence[RunnerGroup]) -> None:
    """GitHub gives a job to any runner whose labels are a superset of `runs-on`.

    If one group's custom labels are a subset of another's, a job meant for
    the larger group's labels can never be told apart from the smaller one's
    runners. That is a routing ambiguity a reviewer rarely spots.
    """
    for i, a in enumerate(groups):
        for j, b in enumerate(groups):
            if j <= i or not a.name or not b.name:
                continue
            if labels_collide(a.labels, b.labels):
                r.fail(
                    f"garo:groups[{j}].labels",
                    f"labels of group {b.name!r} {sorted(b.custom_labels)} collide with group {a.name!r} "
                    f"{sorted(a.custom_labels)}: GitHub could hand a job for one to the other's runners",
                )
