"""Run the real Pulumi program offline under Pulumi's mocks, recording what it declares.

``garo plan`` and the policy tests need the resources the program *would*
register, with their inputs and resource options (``ignore_changes`` is what
keeps Pulumi from fighting the scaler). Pulumi's ``MockMonitor`` sees every
registration request; :class:`RecordingMonitor` keeps a copy of each before
handing it to :class:`PlannedCloud`, which answers like GCP would (ids,
self-links, emails, URLs) so that outputs depending on them resolve.
"""

from __future__ import annotations

import hashlib
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from infra.aws import plan_answers as aws_answers

PROGRAM = Path(__file__).with_name("__main__.py")
SECRET = "[secret]"
COMPUTE = "https://www.googleapis.com/compute/v1/"


def _digest(*parts: str, length: int = 10) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def clean(value: Any, reveal: bool = False) -> Any:
    """JSON-able copy of deserialized inputs; secrets masked unless ``reveal`` (tests only)."""
    if rpc.is_rpc_secret(value):
        return clean(rpc.unwrap_rpc_secret(value), reveal) if reveal else SECRET
    if isinstance(value, Mapping):
        return {str(k): clean(v, reveal) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v, reveal) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire carries every number as a double
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return f"[{type(value).__name__}]"  # unknowns, resource references


@dataclass
class Declared:
    """One resource the program registered (or read, for stack references)."""

    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    raw_inputs: dict[str, Any] = field(repr=False)
    ignore_changes: list[str]
    read: bool = False


class PlannedCloud(pulumi.runtime.Mocks):
    """Plausible, deterministic answers from GCP for everything the program declares."""

    def __init__(self, project: str, region: str, stack_outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self.project, self.region, self.stack_outputs = project, region, stack_outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if (answer := aws_answers.call(args.token, dict(args.args))) is not None:
            return answer, []
        if args.token == "gcp:organizations/getProject:getProject":
            project = str(args.args.get("projectId") or self.project)
            number = str(int(_digest(project), 16) % 10**12).rjust(12, "1")
            return {"projectId": project, "name": project, "number": number, "id": f"projects/{project}"}, []
        return {}, []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = {k: rpc.unwrap_rpc_secret(v) for k, v in args.inputs.items()}
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = dict(self.stack_outputs.get(args.name, {}))
            return args.name, {"name": args.name, "outputs": outputs, "secretOutputNames": []}
        project = str(inputs.get("project") or self.project)
        region = str(inputs.get("region") or inputs.get("location") or self.region)
        if (known := aws_answers.new_resource(args.typ, args.name, args.inputs, self.region, project)) is not None:
            return known
        name = str(inputs.get("name") or inputs.get("namePrefix", args.name + "-") + "00000000000000000000000001")
        state: dict[str, Any] = {**args.inputs, "name": name, "project": project}
        kind = args.typ.split(":")[-1]
        path = {
            "Network": f"projects/{project}/global/networks/{name}",
            "Subnetwork": f"projects/{project}/regions/{region}/subnetworks/{name}",
            "Router": f"projects/{project}/regions/{region}/routers/{name}",
            "Firewall": f"projects/{project}/global/firewalls/{name}",
            "InstanceTemplate": f"projects/{project}/global/instanceTemplates/{name}",
            "RegionInstanceGroupManager": f"projects/{project}/regions/{region}/instanceGroupManagers/{name}",
        }.get(kind)
        if path and args.typ.startswith("gcp:compute/"):
            state["selfLink"] = COMPUTE + path
            if kind == "InstanceTemplate":
                state["selfLinkUnique"] = f"{COMPUTE}{path}?uniqueId={int(_digest(path), 16) % 10**19}"
            if kind == "RegionInstanceGroupManager":
                state["instanceGroup"] = COMPUTE + path.replace("instanceGroupManagers", "instanceGroups")
            return path, state
        if args.typ == "gcp:pubsub/topic:Topic":
            return f"projects/{project}/topics/{name}", state
        if args.typ == "gcp:pubsub/subscription:Subscription":
            return f"projects/{project}/subscriptions/{name}", state
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
            state.update(
                email=email, member=f"serviceAccount:{email}", name=f"projects/{project}/serviceAccounts/{email}"
            )
            return state["name"], state
        if args.typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            state["name"] = f"projects/{project}/roles/{inputs['roleId']}"
            return state["name"], state
        if args.typ == "gcp:secretmanager/secret:Secret":
            state["name"] = f"projects/{project}/secrets/{inputs['secretId']}"
            return state["name"], state
        if args.typ == "gcp:secretmanager/secretVersion:SecretVersion":
            state.update(name=f"{inputs['secret']}/versions/1", version="1")
            return state["name"], state
        if args.typ == "gcp:cloudrunv2/service:Service":
            state["uri"] = f"https://{name}-{_digest(project, name, length=10)}.{region}.run.app"
            return f"projects/{project}/locations/{region}/services/{name}", state
        return f"{args.name}-{_digest(args.typ, args.name, length=8)}", state


def _untyped(method: Callable[..., Any]) -> Callable[[Any], Any]:
    """Pulumi's ``MockMonitor`` methods carry no annotations; this states the gRPC shape we rely on."""
    return method


class RecordingMonitor(mocks.MockMonitor):
    """Keeps each registration request (inputs and options) before the mocks answer it."""

    def __init__(self, cloud: PlannedCloud) -> None:
        super().__init__(cloud)
        self.declared: list[Declared] = []

    def _record(self, request: Any, custom: bool, read: bool, ignore: list[str]) -> None:
        inputs = rpc.deserialize_properties(request.properties if read else request.object)
        self.declared.append(
            Declared(
                type=request.type,
                name=request.name,
                parent=request.parent.split("::")[-1] if request.parent else "",
                custom=custom,
                inputs=clean(inputs),
                raw_inputs=clean(inputs, reveal=True),
                ignore_changes=sorted(ignore),
                read=read,
            )
        )

    def RegisterResource(self, request: Any) -> Any:  # gRPC method name
        if request.type != "pulumi:pulumi:Stack":
            self._record(request, bool(request.custom), False, list(request.ignoreChanges))
        return _untyped(super().RegisterResource)(request)

    def ReadResource(self, request: Any) -> Any:  # gRPC method name
        self._record(request, True, True, [])
        return _untyped(super().ReadResource)(request)


async def _resolve(outputs: Mapping[str, Any]) -> dict[str, tuple[Any, bool]]:
    resolved: dict[str, tuple[Any, bool]] = {}
    for key, value in outputs.items():
        output = pulumi.Output.from_input(value)
        resolved[key] = (await output.future(), bool(await output.is_secret()))
    return resolved


def run_program(
    config: Mapping[str, str], secret_keys: list[str], stack: str, cloud: PlannedCloud
) -> tuple[list[Declared], dict[str, tuple[Any, bool]]]:
    """Run infra/__main__.py once with this config; return declarations and (value, is_secret) outputs.

    The runtime's settings, config and root stack are process-global: each call
    resets them, but callers that need several stacks should prefer one process
    per stack (the tests do).
    """
    settings.ROOT.set(None)
    runtime_config.set_all_config(dict(config), list(secret_keys))
    monitor = RecordingMonitor(cloud)
    mocks.set_mocks(cloud, project="garo", stack=stack, preview=False, monitor=monitor)

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    root = settings.get_root_resource()
    outputs: Mapping[str, Any] = getattr(root, "outputs", {})
    return monitor.declared, _sync_await(_resolve(outputs))
