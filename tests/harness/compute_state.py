"""The state behind the Compute fake: managed instance groups, instances, operations.

Only requests that passed :mod:`tests.harness.compute_validator` reach here, so
this module models *behaviour*: MIG membership and currentAction, instance
status progressing PROVISIONING -> STAGING -> RUNNING, metadata and label
fingerprints (412 on a stale one, as Compute does), operations going
PENDING -> RUNNING -> DONE, and creation failures reported on the operation
(``error.errors[]``) and on the managed instance (``lastAttempt.errors``).

Time does not pass on its own: every ``listManagedInstances``/``instances.get``
advances the group one step and :meth:`ComputeState.settle` finishes everything,
so tests are deterministic.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from tests.harness.compute_validator import RequestRejected

API = "https://www.googleapis.com/compute/v1"
CAPACITY_CODES = ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "QUOTA_EXCEEDED")
_INSTANCE_URL = re.compile(
    r"^(?:.*/)?(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/instances/(?P<name>[a-z][-a-z0-9]*)$"
)
_BOOT = ["PROVISIONING", "STAGING", "RUNNING"]
_ids = itertools.count(1000)


def fingerprint(value: Any) -> str:
    return hashlib.sha256(repr(sorted(value.items()) if isinstance(value, dict) else value).encode()).hexdigest()[:12]


@dataclass
class FakeInstance:
    name: str
    zone: str
    status: str | None = None  # None while the MIG has not created the VM yet
    action: str = "CREATING"
    metadata: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    preserved: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    guest: dict[str, str] = field(default_factory=dict)  # "namespace/key" -> value
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def metadata_fingerprint(self) -> str:
        return fingerprint(self.metadata)

    @property
    def label_fingerprint(self) -> str:
        return fingerprint(self.labels)


@dataclass
class FakeGroup:
    scope: str  # "regions" | "zones"
    location: str
    name: str
    zones: list[str]
    template: str
    target_size: int = 0
    members: dict[str, FakeInstance] = field(default_factory=dict)
    _next_zone: int = 0

    def pick_zone(self, exhausted: dict[str, str]) -> tuple[str, str | None]:
        """Round-robin over zones with capacity, as a regional MIG spreads VMs; else the error."""
        for _ in self.zones:
            zone = self.zones[self._next_zone % len(self.zones)]
            self._next_zone += 1
            if zone not in exhausted and "*" not in exhausted:
                return zone, None
        zone = self.zones[0]
        return zone, exhausted.get(zone) or exhausted.get("*")


@dataclass
class FakeOperation:
    name: str
    scope: str
    location: str
    kind: str
    target: str
    polls_left: int
    errors: list[dict[str, str]] = field(default_factory=list)
    status: str = "PENDING"

    def advance(self, to_done: bool = False) -> None:
        self.polls_left = 0 if to_done else self.polls_left - 1
        self.status = "DONE" if self.polls_left <= 0 else "RUNNING"


class ComputeState:
    def __init__(self, project: str, region: str, zones: list[str]) -> None:
        self.project, self.region, self.zones = project, region, zones
        self.groups: dict[tuple[str, str, str], FakeGroup] = {}
        self.operations: dict[str, FakeOperation] = {}
        self.exhausted: dict[str, str] = {}  # zone or "*" -> error code
        self.op_polls = 2
        self.errors_on_operation = True
        self.resize_calls: list[tuple[str, int, int]] = []  # (group, old size, new size)

    # ------------------------------------------------------------------ lookups

    def group(self, p: dict[str, str]) -> FakeGroup:
        scope, location = ("regions", p["region"]) if "region" in p else ("zones", p["zone"])
        self._project(p)
        try:
            return self.groups[(scope, location, p["instanceGroupManager"])]
        except KeyError:
            raise RequestRejected(
                404,
                f"The resource 'projects/{self.project}/{scope}/{location}/instanceGroupManagers/{p['instanceGroupManager']}' was not found",
                "notFound",
            ) from None

    def instance(self, p: dict[str, str]) -> FakeInstance:
        self._project(p)
        for group in self.groups.values():
            found = group.members.get(p["instance"])
            if found and found.zone == p["zone"] and found.status is not None:
                self._tick(group)
                return found
        raise RequestRejected(
            404,
            f"The resource 'projects/{self.project}/zones/{p['zone']}/instances/{p['instance']}' was not found",
            "notFound",
        )

    def _project(self, p: dict[str, str]) -> None:
        if p["project"] != self.project:
            raise RequestRejected(
                403,
                f"Required 'compute.instanceGroupManagers.get' permission for 'projects/{p['project']}'",
                "forbidden",
            )

    def url(self, *parts: str) -> str:
        return "/".join((API, "projects", self.project, *parts))

    # ------------------------------------------------------------------ time

    def _tick(self, group: FakeGroup) -> None:
        """One step of the MIG's background work."""
        for name, inst in list(group.members.items()):
            if inst.action == "DELETING":
                del group.members[name]
            elif inst.action == "CREATING" and inst.status is None:
                if inst.errors:  # the MIG keeps retrying a failed creation, possibly elsewhere
                    zone, error = group.pick_zone(self.exhausted)
                    if error is not None:
                        continue
                    inst.zone, inst.errors = zone, []
                inst.status = "PROVISIONING"
                inst.metadata.update(inst.preserved)
            elif inst.action in ("CREATING", "RESUMING", "STARTING"):
                inst.status = _BOOT[min(_BOOT.index(inst.status) + 1, 2)] if inst.status in _BOOT else "RUNNING"
                if inst.status == "RUNNING":
                    inst.action = "NONE"

    def settle(self) -> None:
        for group in self.groups.values():
            for _ in range(5):
                self._tick(group)
        for op in self.operations.values():
            op.advance(to_done=True)

    # ------------------------------------------------------------------ operations

    def operation(
        self, scope: str, location: str, kind: str, target: str, errors: list[dict[str, str]] | None = None
    ) -> dict[str, Any]:
        op = FakeOperation(f"operation-{next(_ids)}", scope, location, kind, target, self.op_polls, errors or [])
        self.operations[op.name] = op
        return self.render_operation(op)

    def render_operation(self, op: FakeOperation) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(abs(hash(op.name)) % 10**18),
            "name": op.name,
            "operationType": op.kind,
            "status": op.status,
            "targetLink": op.target,
            "selfLink": self.url(op.scope, op.location, "operations", op.name),
            "region" if op.scope == "regions" else "zone": self.url(op.scope, op.location),
            "progress": 100 if op.status == "DONE" else 0,
        }
        if op.status == "DONE" and op.errors:
            body["error"] = {"errors": op.errors}
            body["httpErrorStatusCode"], body["httpErrorMessage"] = 400, "BAD REQUEST"
        return body

    def get_operation(self, p: dict[str, str], wait: bool) -> dict[str, Any]:
        self._project(p)
        op = self.operations.get(p["operation"])
        scope = "regions" if "region" in p else "zones"
        if op is None or op.scope != scope or op.location != p.get("region", p.get("zone")):
            raise RequestRejected(404, f"The resource 'operation {p['operation']}' was not found", "notFound")
        op.advance(to_done=wait)
        return self.render_operation(op)

    # ------------------------------------------------------------------ rendering

    def render_managed(self, group: FakeGroup, inst: FakeInstance) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": inst.name,
            "currentAction": inst.action,
            "instance": self.url("zones", inst.zone, "instances", inst.name),
        }
        if inst.status is not None:
            body.update(instanceStatus=inst.status, id=str(inst.id))
        if inst.preserved:
            body["preservedStateFromConfig"] = {"metadata": dict(inst.preserved)}
        if inst.errors:
            body["lastAttempt"] = {"errors": {"errors": inst.errors}}
        return body

    def render_group(self, g: FakeGroup) -> dict[str, Any]:
        return {
            "kind": "compute#instanceGroupManager",
            "name": g.name,
            "instanceTemplate": self.url("global", "instanceTemplates", g.template),
            "targetSize": g.target_size,
            "targetSuspendedSize": sum(1 for i in g.members.values() if i.status == "SUSPENDED"),
            "targetStoppedSize": sum(1 for i in g.members.values() if i.status == "TERMINATED"),
            "selfLink": self.url(g.scope, g.location, "instanceGroupManagers", g.name),
            g.scope[:-1]: self.url(g.scope, g.location),
            "distributionPolicy": {"zones": [{"zone": self.url("zones", z)} for z in g.zones]},
            "status": {"isStable": all(i.action == "NONE" for i in g.members.values())},
        }

    def render_instance(self, inst: FakeInstance) -> dict[str, Any]:
        return {
            "kind": "compute#instance",
            "id": str(inst.id),
            "name": inst.name,
            "zone": self.url("zones", inst.zone),
            "status": inst.status,
            "selfLink": self.url("zones", inst.zone, "instances", inst.name),
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": inst.metadata_fingerprint,
                "items": [{"key": k, "value": v} for k, v in sorted(inst.metadata.items())],
            },
            "labels": dict(inst.labels),
            "labelFingerprint": inst.label_fingerprint,
        }

    def members_from_urls(self, group: FakeGroup, urls: list[str], skip_invalid: bool) -> list[FakeInstance]:
        """Resolve instance URLs like deleteInstances does: malformed or foreign URLs always fail."""
        found: list[FakeInstance] = []
        for url in urls:
            match = _INSTANCE_URL.match(url)
            if not match or match["project"] not in (None, self.project) or match["zone"] not in group.zones:
                raise RequestRejected(
                    400,
                    f"Invalid value for field 'instances': '{url}'. Instance URL is malformed or outside the group's location.",
                )
            inst = group.members.get(match["name"])
            if inst is None or inst.zone != match["zone"] or inst.action == "DELETING":
                if not skip_invalid:
                    raise RequestRejected(
                        400, f"The instance '{url}' is not a member of the managed instance group or is being deleted."
                    )
                continue
            found.append(inst)
        return found
