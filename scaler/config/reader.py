"""Reading a nested mapping while collecting every problem with its key path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scaler.config.model import NAMESPACE, ConfigError, Issue, Secret


class Reader:
    """Collects issues while reading a nested mapping, keeping the key path."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def string(self, data: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = data.get(key, default)
        if value is None:
            self.fail(f"{path}.{key}", "is required")
            return ""
        if not isinstance(value, str) or not value:
            self.fail(f"{path}.{key}", f"expected a non-empty string, got {value!r}")
            return ""
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 0) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"expected an integer, got {value!r}")
            return default
        if value < minimum:
            self.fail(f"{path}.{key}", f"must be >= {minimum}, got {value}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"expected true or false, got {value!r}")
            return default
        return value

    def strings(self, data: Mapping[str, Any], key: str, path: str, required: bool = False) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{path}.{key}", f"expected a list of strings, got {value!r}")
            return ()
        return tuple(value)

    def secret(self, data: Mapping[str, Any], key: str, path: str) -> Secret | None:
        value = data.get(key)
        where = f"{path}.{key}"
        if value is None:
            return None
        if isinstance(value, str):
            # Never echo the value: it may be the secret itself.
            self.fail(where, "is a plaintext secret; use `pulumi config set --secret` or {secretManager: <name>}")
            return None
        if isinstance(value, Mapping):
            if "secure" in value:
                return Secret("pulumi", "secure")
            for kind, name in (("secretManager", "secret-manager"), ("env", "env"), ("file", "file")):
                if kind in value and isinstance(value[kind], str) and value[kind]:
                    return Secret(name, value[kind])  # type: ignore[arg-type]
        self.fail(where, "expected {secure: ...}, {secretManager: <name>}, {env: <VAR>} or {file: <path>}")
        return None


def namespaced(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    own: dict[str, Any] = {}
    provider: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, _, name = str(key).partition(":")
        if namespace == NAMESPACE and name:
            own[name] = value
        else:
            provider[str(key)] = value
    return own, provider


def read_document(path: str | Path, formats: str = "YAML") -> Any:
    """Parse a YAML (or JSON, a subset) file; any failure is a ConfigError naming the file.

    A syntax error is reported by line and column only: PyYAML's own message
    quotes the offending line, which may be the very secret that broke it.
    """
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([Issue(str(path), "file not found")], str(path)) from None
    except OSError as exc:
        raise ConfigError([Issue(str(path), f"cannot read: {exc.strerror}")], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError([Issue(str(path), f"not valid {formats}: not UTF-8 text")], str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError([Issue(str(path), f"not valid {formats}{where}: {problem}")], str(path)) from None
