"""Validate HTTP requests against Google's own Compute discovery document.

No Compute emulator exists, so the fake in ``compute.py`` is only as honest as
the requests it refuses. This module builds that refusal generically from
``compute.v1.json`` (shipped in google-api-python-client): a request must match
a method by HTTP method and path template, carry only known query parameters
of the right type/pattern/enum, all required ones, and a JSON body whose every
field exists in the method's request schema (recursively, with types and enums).
Anything else becomes a :class:`RequestRejected` carrying Compute's error shape.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import googleapiclient

DISCOVERY_PATH = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "compute.v1.json"


class RequestRejected(Exception):
    """A request Compute would refuse; ``body()`` is Compute's JSON error."""

    def __init__(self, status: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.reason)


def error_body(status: int, message: str, reason: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }


@dataclass(frozen=True)
class Method:
    id: str  # e.g. compute.regionInstanceGroupManagers.createInstances
    http_method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    parameters: dict[str, Any]
    request_ref: str | None


@dataclass(frozen=True)
class Matched:
    method: Method
    path_params: dict[str, str]
    query: dict[str, Any]
    body: Any


class DiscoveryValidator:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.base_path = "/" + document["servicePath"]  # "/compute/v1/"
        self.schemas: dict[str, Any] = document["schemas"]
        self.global_params: dict[str, Any] = document.get("parameters", {})
        self.methods: list[Method] = []
        self._collect(document.get("resources", {}))

    def _collect(self, resources: dict[str, Any]) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                template = method.get("flatPath") or method["path"]
                pattern = _template_regex(template)
                self.methods.append(
                    Method(
                        id=method["id"],
                        http_method=method["httpMethod"],
                        template=template,
                        regex=re.compile(f"^{pattern}$"),
                        literal_segments=sum(1 for s in template.split("/") if "{" not in s),
                        parameters=method.get("parameters", {}),
                        request_ref=(method.get("request") or {}).get("$ref"),
                    )
                )
            self._collect(resource.get("resources", {}))

    # ------------------------------------------------------------------ request

    def validate(self, http_method: str, path: str, query: dict[str, list[str]], raw_body: bytes) -> Matched:
        if not path.startswith(self.base_path):
            raise RequestRejected(404, f"The requested URL {path} was not found on this server.", "notFound")
        relative = path[len(self.base_path) :]
        candidates = [(m, m.regex.match(relative)) for m in self.methods]
        matching = [(m, match) for m, match in candidates if match]
        if not matching:
            raise RequestRejected(404, f"The requested URL {path} was not found on this server.", "notFound")
        allowed = [(m, match) for m, match in matching if m.http_method == http_method]
        if not allowed:
            methods = sorted({m.http_method for m, _ in matching})
            raise RequestRejected(
                405, f"Method {http_method} not allowed for {path} (allowed: {', '.join(methods)})", "methodNotAllowed"
            )
        method, match = max(allowed, key=lambda pair: pair[0].literal_segments)
        path_params = match.groupdict()
        for name, value in path_params.items():
            self._check_scalar(method.parameters.get(name, {"type": "string"}), value, name)
        parsed_query = self._check_query(method, query)
        body = self._check_body(method, raw_body)
        return Matched(method, path_params, parsed_query, body)

    def _check_query(self, method: Method, query: dict[str, list[str]]) -> dict[str, Any]:
        parsed: dict[str, Any] = {}
        for name, values in query.items():
            spec = method.parameters.get(name) or self.global_params.get(name)
            if spec is None or spec.get("location") == "path":
                raise RequestRejected(
                    400,
                    f"Invalid JSON payload received. Unknown name \"{name}\": Cannot bind query parameter. Field '{name}' could not be found in request message.",
                )
            if len(values) > 1 and not spec.get("repeated"):
                raise RequestRejected(400, f"Query parameter '{name}' given {len(values)} times but is not repeated")
            converted = [self._check_scalar(spec, v, name) for v in values]
            parsed[name] = converted if spec.get("repeated") else converted[0]
        for name, spec in method.parameters.items():
            if spec.get("required") and spec.get("location") == "query" and name not in parsed:
                raise RequestRejected(400, f"Required parameter '{name}' is missing for {method.id}", "required")
        return parsed

    def _check_scalar(self, spec: dict[str, Any], value: str, name: str) -> Any:
        kind = spec.get("type", "string")
        if kind == "integer":
            if not re.fullmatch(r"-?\d+", value):
                raise RequestRejected(400, f"Invalid value at '{name}' (TYPE_INT32), \"{value}\"")
            number = int(value)
            if (
                "minimum" in spec
                and number < int(spec["minimum"])
                or "maximum" in spec
                and number > int(spec["maximum"])
            ):
                raise RequestRejected(400, f"Invalid value for field '{name}': {value}. Out of range.")
            return number
        if kind == "boolean":
            if value not in ("true", "false"):
                raise RequestRejected(400, f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"")
            return value == "true"
        if "enum" in spec and value not in spec["enum"]:
            raise RequestRejected(400, f"Invalid value at '{name}' (TYPE_ENUM), \"{value}\"")
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            raise RequestRejected(
                400, f"Invalid value for field '{name}': '{value}'. Must be a match of regex '{spec['pattern']}'"
            )
        return value

    def _check_body(self, method: Method, raw_body: bytes) -> Any:
        if not raw_body.strip():
            return {} if method.request_ref else None
        if method.request_ref is None:
            raise RequestRejected(400, f"Invalid JSON payload received. {method.id} takes no request body.")
        try:
            body = json.loads(raw_body)
        except ValueError as exc:
            raise RequestRejected(400, f"Invalid JSON payload received. {exc}") from None
        self.check_value({"$ref": method.request_ref}, body, "")
        return body

    # ------------------------------------------------------------------ schema

    def check_value(self, schema: dict[str, Any], value: Any, where: str) -> None:
        """Check ``value`` against a discovery schema, naming the field path like Google does."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type", "object")
        label = where or "request"
        if kind == "object":
            if not isinstance(value, dict):
                raise RequestRejected(400, f"Invalid JSON payload received. Expected an object at '{label}'.")
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in properties:
                    self.check_value(properties[key], item, f"{where}.{key}" if where else key)
                elif extra is not None:
                    self.check_value(extra, item, f"{where}[{key!r}]")
                else:
                    raise RequestRejected(
                        400, f"Invalid JSON payload received. Unknown name \"{key}\" at '{label}': Cannot find field."
                    )
        elif kind == "array":
            if not isinstance(value, list):
                raise RequestRejected(400, f"Invalid JSON payload received. Expected a list at '{label}'.")
            for i, item in enumerate(value):
                self.check_value(schema.get("items", {}), item, f"{where}[{i}]")
        elif kind == "string":
            numeric = (
                schema.get("format") in ("int64", "uint64") and isinstance(value, int) and not isinstance(value, bool)
            )
            if not isinstance(value, str) and not numeric:
                raise RequestRejected(400, f"Invalid value at '{label}' (TYPE_STRING), {json.dumps(value)}")
            if "enum" in schema and value not in schema["enum"]:
                raise RequestRejected(400, f"Invalid value at '{label}' (TYPE_ENUM), {json.dumps(value)}")
        elif kind in ("integer", "number"):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok or isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None
            if not ok or kind == "integer" and isinstance(value, float) and not value.is_integer():
                raise RequestRejected(400, f"Invalid value at '{label}' (TYPE_{kind.upper()}), {json.dumps(value)}")
        elif kind == "boolean" and not isinstance(value, bool):
            raise RequestRejected(400, f"Invalid value at '{label}' (TYPE_BOOL), {json.dumps(value)}")


def _template_regex(template: str) -> str:
    """``a/{b}/c`` -> ``a/(?P<b>[^/]+)/c``; literal parts are escaped."""
    parts = re.split(r"\{\+?(\w+)\}", template)
    return "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))


@functools.cache
def compute_validator() -> DiscoveryValidator:
    """The validator for compute.v1, parsed once per test session (the document is ~5 MB)."""
    return DiscoveryValidator(json.loads(DISCOVERY_PATH.read_text(encoding="utf-8")))
