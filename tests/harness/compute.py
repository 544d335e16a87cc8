"""A fake of GCP Compute's REST API over real HTTP, strict like the real one.

Every request is first validated against Google's discovery document
(:mod:`tests.harness.compute_validator`); only then does it reach the stateful
handlers below (:mod:`tests.harness.compute_state`). Methods the scaler does not
use answer 501 so a test notices instead of getting a silent success.

Fixtures: ``compute_server`` (session: one HTTP server on a free loopback
port) and ``compute_fake`` (function: the same server with fresh state).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tests.harness.compute_state import ComputeState, FakeGroup, FakeInstance
from tests.harness.compute_validator import RequestRejected, compute_validator, error_body

_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
Handler = Callable[["ComputeFake", dict[str, str], dict[str, Any], Any], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


def _both(method: str) -> tuple[str, str]:
    return (f"regionInstanceGroupManagers.{method}", f"instanceGroupManagers.{method}")


class ComputeFake:
    """State, knobs and counters of the fake; ``base_url`` is what a client uses."""

    def __init__(self, project: str = "garo-test", region: str = "europe-west4") -> None:
        self.project, self.region = project, region
        self.zones = [f"{region}-a", f"{region}-b", f"{region}-c"]
        self.base_url = ""
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.state = ComputeState(self.project, self.region, self.zones)
            self.calls: Counter[str] = Counter()  # "regionInstanceGroupManagers.createInstances" -> n
            self.requests: list[tuple[str, dict[str, str], dict[str, Any], Any]] = []
            self.latency = 0.0
            self._faults: list[list[Any]] = []  # [status, remaining, method or None]

    # ------------------------------------------------------------------ test helpers

    def add_group(
        self, name: str, *, zones: list[str] | None = None, template: str = "garo-runner", zonal: str | None = None
    ) -> FakeGroup:
        """A MIG; regional over ``zones`` unless ``zonal`` names its single zone."""
        scope, location = ("zones", zonal) if zonal else ("regions", self.region)
        group = FakeGroup(scope, location, name, [zonal] if zonal else list(zones or self.zones), template)
        with self.lock:
            self.state.groups[(scope, location, name)] = group
        return group

    def _group(self, name: str) -> FakeGroup:
        return next(g for g in self.state.groups.values() if g.name == name)

    def seed(self, group: str, names: list[str], status: str = "SUSPENDED") -> list[FakeInstance]:
        """Members that already exist: SUSPENDED/TERMINATED standby, or RUNNING."""
        with self.lock:
            g = self._group(group)
            made = []
            for name in names:
                zone, _ = g.pick_zone({})
                made.append(g.members.setdefault(name, FakeInstance(name, zone, status=status, action="NONE")))
            g.target_size = sum(1 for i in g.members.values() if i.status not in ("SUSPENDED", "TERMINATED"))
            return made

    def instance(self, group: str, name: str) -> FakeInstance | None:
        with self.lock:
            return self._group(group).members.get(name)

    def members(self, group: str) -> dict[str, FakeInstance]:
        with self.lock:
            return dict(self._group(group).members)

    def settle(self) -> None:
        """Let every pending MIG action and operation finish."""
        with self.lock:
            self.state.settle()

    def exhaust(self, zone: str | None = None, code: str = "ZONE_RESOURCE_POOL_EXHAUSTED") -> None:
        """Creations in ``zone`` (all zones if None) fail with ``code`` until :meth:`restore`."""
        with self.lock:
            self.state.exhausted[zone or "*"] = code

    def restore(self) -> None:
        with self.lock:
            self.state.exhausted.clear()

    def fail_next(self, status: int, count: int = 1, method: str | None = None) -> None:
        """The next ``count`` requests (to ``method``, e.g. "regionOperations.get") answer ``status``."""
        with self.lock:
            self._faults.append([status, count, method])

    @property
    def resize_calls(self) -> list[tuple[str, int, int]]:
        return self.state.resize_calls

    # ------------------------------------------------------------------ HTTP

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        status, body = self.handle(request.method, request.path, request.args.to_dict(flat=False), request.get_data())
        return Response(json.dumps(body), status=status, content_type="application/json; charset=UTF-8")(
            environ, start_response
        )

    def handle(
        self, http_method: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        if self.latency:
            time.sleep(self.latency)
        try:
            matched = compute_validator().validate(http_method, path, query, raw)
        except RequestRejected as exc:
            return exc.status, exc.body()
        short = matched.method.id.removeprefix("compute.")
        with self.lock:
            self.calls[short] += 1
            self.requests.append((short, matched.path_params, matched.query, matched.body))
            for fault in self._faults:
                if fault[1] > 0 and fault[2] in (None, short):
                    fault[1] -= 1
                    reason = "rateLimitExceeded" if fault[0] == 429 else "backendError"
                    return fault[0], error_body(fault[0], f"Injected {fault[0]} for {short}", reason)
            handler = HANDLERS.get(short)
            if handler is None:
                return 501, error_body(
                    501, f"{short} is valid Compute but not implemented by the fake", "notImplemented"
                )
            try:
                return 200, handler(self, matched.path_params, matched.query, matched.body)
            except RequestRejected as exc:
                return exc.status, exc.body()


# ---------------------------------------------------------------------- handlers


@handles(*_both("get"))
def _get_group(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    return fake.state.render_group(fake.state.group(p))


@handles(*_both("list"))
def _list_groups(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s = fake.state
    location = p.get("region", p.get("zone"))
    items = [s.render_group(g) for (_, loc, _), g in s.groups.items() if loc == location]
    return {"kind": "compute#regionInstanceGroupManagerList", "items": items}


@handles(*_both("createInstances"))
def _create(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s, g = fake.state, fake.state.group(p)
    configs = body.get("instances") or []
    if not configs:
        raise RequestRejected(
            400, "Invalid value for field 'instances': []. At least one per-instance config is required."
        )
    errors: list[dict[str, str]] = []
    for config in configs:
        name = config.get("name", "")
        if not _NAME.match(name):
            raise RequestRejected(
                400,
                f"Invalid value for field 'instances[].name': '{name}'. Must be a match of regex '[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?'",
            )
        if name in g.members:
            errors.append(
                {
                    "code": "RESOURCE_ALREADY_EXISTS",
                    "message": f"The resource '{s.url('zones', g.members[name].zone, 'instances', name)}' already exists",
                }
            )
            continue
        zone, error = g.pick_zone(s.exhausted)
        inst = FakeInstance(name, zone, preserved=dict((config.get("preservedState") or {}).get("metadata") or {}))
        if error:
            message = (
                f"Instance '{name}' creation failed: The zone 'projects/{s.project}/zones/{zone}' does not have enough resources available to fulfill the request."
                if "ZONE" in error
                else f"Instance '{name}' creation failed: Quota 'CPUS' exceeded in region {s.region}."
            )
            inst.errors = [{"code": error, "message": message}]
            if s.errors_on_operation:
                errors.append({"code": error, "location": name, "message": message})
        g.members[name] = inst
        g.target_size += 1
    return s.operation(
        g.scope,
        g.location,
        "compute.instanceGroupManagers.createInstances",
        s.url(g.scope, g.location, "instanceGroupManagers", g.name),
        errors,
    )


@handles(*_both("patchPerInstanceConfigs"))
def _patch_configs(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    """Insert-or-patch per-instance configs; the fake merges ``preservedState.metadata`` into the member's."""
    s, g = fake.state, fake.state.group(p)
    for config in body.get("perInstanceConfigs") or []:
        inst = g.members.get(config.get("name", ""))
        if inst is None:
            raise RequestRejected(404, f"The resource instance '{config.get('name')}' was not found", "notFound")
        inst.preserved.update((config.get("preservedState") or {}).get("metadata") or {})
    return s.operation(
        g.scope,
        g.location,
        "compute.instanceGroupManagers.patchPerInstanceConfigs",
        s.url(g.scope, g.location, "instanceGroupManagers", g.name),
    )


@handles(*_both("deleteInstances"))
def _delete(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s, g = fake.state, fake.state.group(p)
    for inst in s.members_from_urls(g, body.get("instances") or [], bool(body.get("skipInstancesOnValidationError"))):
        inst.action = "DELETING"
        g.target_size = max(g.target_size - 1, 0)
    return s.operation(
        g.scope,
        g.location,
        "compute.instanceGroupManagers.deleteInstances",
        s.url(g.scope, g.location, "instanceGroupManagers", g.name),
    )


@handles(*_both("resize"))
def _resize(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    """Resizing down deletes members the MIG picks (the newest here): exactly the danger Garo avoids."""
    s, g = fake.state, fake.state.group(p)
    size = q["size"]
    s.resize_calls.append((g.name, g.target_size, size))
    live = [i for i in g.members.values() if i.action != "DELETING"]
    for inst in reversed(live[size:]):
        inst.action = "DELETING"
    for n in range(len(live), size):
        zone, _ = g.pick_zone({})
        g.members[f"{g.name}-{n:04x}"] = FakeInstance(f"{g.name}-{n:04x}", zone)
    g.target_size = size
    return s.operation(
        g.scope,
        g.location,
        "compute.instanceGroupManagers.resize",
        s.url(g.scope, g.location, "instanceGroupManagers", g.name),
    )


@handles(*_both("listManagedInstances"))
def _list_managed(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s, g = fake.state, fake.state.group(p)
    s._tick(g)
    rows = [s.render_managed(g, i) for i in g.members.values()]
    start = int(q.get("pageToken") or 0)
    size = int(q.get("maxResults") or 500)
    page: dict[str, Any] = {"managedInstances": rows[start : start + size]}
    if start + size < len(rows):
        page["nextPageToken"] = str(start + size)
    return page


def _transition(required: str, action: str, op_type: str) -> Handler:
    """suspend/resume/stop/start: only members in the ``required`` status are accepted, as Compute does."""

    def handler(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
        s, g = fake.state, fake.state.group(p)
        chosen = s.members_from_urls(g, body.get("instances") or [], skip_invalid=False)
        wrong = [i.name for i in chosen if (i.status or "") not in required.split("|")]
        if wrong:
            raise RequestRejected(400, f"Instances {wrong} are not in a state that allows {op_type}.")
        for inst in chosen:
            # targetSize counts live VMs: suspend/stop move a VM to targetSuspended/StoppedSize and back.
            if action in ("SUSPENDED", "TERMINATED"):
                g.target_size -= inst.status == "RUNNING"
                inst.status, inst.action = action, "NONE"
            else:
                g.target_size += 1
                inst.action = action
        return s.operation(
            g.scope,
            g.location,
            f"compute.instanceGroupManagers.{op_type}",
            s.url(g.scope, g.location, "instanceGroupManagers", g.name),
        )

    return handler


for _method, _required, _action in (
    ("suspendInstances", "RUNNING", "SUSPENDED"),
    ("resumeInstances", "SUSPENDED", "RESUMING"),
    ("stopInstances", "RUNNING|SUSPENDED", "TERMINATED"),
    ("startInstances", "TERMINATED", "STARTING"),
):
    handles(*_both(_method))(_transition(_required, _action, _method))


@handles("instances.get")
def _get_instance(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    return fake.state.render_instance(fake.state.instance(p))


@handles("instances.list")
def _list_instances(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    if q.get("filter"):
        raise RequestRejected(501, "the fake does not evaluate list filters", "notImplemented")
    s = fake.state
    items = [
        s.render_instance(i) for g in s.groups.values() for i in g.members.values() if i.zone == p["zone"] and i.status
    ]
    return {"kind": "compute#instanceList", "items": items}


@handles("instances.setMetadata")
def _set_metadata(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s, inst = fake.state, fake.state.instance(p)
    if body.get("fingerprint") != inst.metadata_fingerprint:
        raise RequestRejected(
            412, "Supplied fingerprint does not match current metadata fingerprint.", "conditionNotMet"
        )
    inst.metadata = {item["key"]: item.get("value", "") for item in body.get("items") or []}
    return s.operation("zones", inst.zone, "setMetadata", s.url("zones", inst.zone, "instances", inst.name))


@handles("instances.setLabels")
def _set_labels(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    s, inst = fake.state, fake.state.instance(p)
    if body.get("labelFingerprint") != inst.label_fingerprint:
        raise RequestRejected(
            412, "Labels fingerprint either invalid or resource labels have changed", "conditionNotMet"
        )
    inst.labels = dict(body.get("labels") or {})
    return s.operation("zones", inst.zone, "setLabels", s.url("zones", inst.zone, "instances", inst.name))


@handles("instances.getGuestAttributes")
def _guest_attributes(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    inst = fake.state.instance(p)
    if "variableKey" in q:
        if q["variableKey"] not in inst.guest:
            raise RequestRejected(404, f"The resource 'guest attribute {q['variableKey']}' was not found", "notFound")
        return {
            "kind": "compute#guestAttributes",
            "variableKey": q["variableKey"],
            "variableValue": inst.guest[q["variableKey"]],
        }
    prefix = q.get("queryPath", "")
    items = [
        {"namespace": k.split("/")[0], "key": k.split("/", 1)[1], "value": v}
        for k, v in sorted(inst.guest.items())
        if k.startswith(prefix)
    ]
    return {"kind": "compute#guestAttributes", "queryPath": prefix, "queryValue": {"items": items}}


@handles("regionOperations.get", "zoneOperations.get")
def _get_operation(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    return fake.state.get_operation(p, wait=False)


@handles("regionOperations.wait", "zoneOperations.wait")
def _wait_operation(fake: ComputeFake, p: dict[str, str], q: dict[str, Any], body: Any) -> dict[str, Any]:
    return fake.state.get_operation(p, wait=True)


# ---------------------------------------------------------------------- fixtures


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Tests read ``ComputeFake.calls``; a log line per request only buries failures."""


@pytest.fixture(scope="session")
def compute_server() -> Iterator[ComputeFake]:
    """One real HTTP server for the session; tests get it through ``compute_fake``."""
    fake = ComputeFake()
    server = make_server("127.0.0.1", 0, fake.wsgi, threaded=True, request_handler=_QuietHandler)
    fake.base_url = f"http://127.0.0.1:{server.server_port}/compute/v1"
    thread = threading.Thread(target=server.serve_forever, name="compute-fake", daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def compute_fake(compute_server: ComputeFake) -> ComputeFake:
    compute_server.reset()
    return compute_server
