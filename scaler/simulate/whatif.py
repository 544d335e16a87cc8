"""What-if: `--set KEY=V1,V2,...` options, their combinations, the Pareto front and the stack-file diff.

A key is a path into the stack file's ``config:`` block, as ``garo validate``
names problems: ``garo:groups[0].warmPool.size`` (a group may also be named:
``garo:groups[small].max``). Values are YAML scalars, so ``2`` is a number,
``true`` a boolean and ``Mon-Fri 07:00-19:00 Europe/Amsterdam`` a string.
Every combination is validated as a stack before anything runs: a bad key or
value is reported with its key path and changes nothing.

The chosen configuration is printed as a unified diff of the stack file
that touches only the lines that change (comments and layout stay), ready for
a git-ops pull request.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from scaler.config import ConfigError, StackConfig, parse_stack_config

Token = str | int
_FIRST = re.compile(r"[A-Za-z0-9_:-]+")
_NEXT = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]|\[([a-z][-a-z0-9]*)\]")


class SetError(ValueError):
    """A --set option that cannot be applied; the message names the option and the key path."""


@dataclass(frozen=True)
class SetOption:
    text: str  # as given
    key: str  # the key path as given
    path: tuple[Token, ...]  # resolved: group names replaced by their index
    values: tuple[Any, ...]


def _tokens(key: str, option: str) -> list[Token | tuple[str]]:
    first = _FIRST.match(key)
    if first is None or not first.group().startswith("garo:"):
        raise SetError(f"--set {option!r}: the key must start with a garo: setting, e.g. garo:groups[0].max")
    tokens: list[Token | tuple[str]] = [first.group()]
    pos = first.end()
    while pos < len(key):
        match = _NEXT.match(key, pos)
        if match is None:
            raise SetError(f"--set {option!r}: cannot read the key path at {key[pos:]!r} (in {key})")
        name, index, group = match.groups()
        tokens.append(name if name is not None else int(index) if index is not None else (group,))
        pos = match.end()
    return tokens


def _resolve(tokens: list[Token | tuple[str]], config: Mapping[str, Any], key: str, option: str) -> tuple[Token, ...]:
    """Check the path against the stack: list indexes exist, named groups exist, parents are mappings."""
    node: Any = config
    path: list[Token] = []
    for i, token in enumerate(tokens):
        where = key if i == len(tokens) - 1 else _path_text(path) or key
        if isinstance(token, tuple):
            if not isinstance(node, list):
                raise SetError(f"--set {option!r}: {_path_text(path)} is not a list")
            names = [g.get("name") if isinstance(g, Mapping) else None for g in node]
            if token[0] not in names:
                raise SetError(f"--set {option!r}: {_path_text(path)} has no entry named {token[0]!r} (have: {names})")
            token = names.index(token[0])
        if isinstance(token, int):
            if not isinstance(node, list):
                raise SetError(f"--set {option!r}: {_path_text(path)} is not a list")
            if token >= len(node):
                raise SetError(f"--set {option!r}: {_path_text(path)}[{token}]: the list has {len(node)} entries")
            node = node[token]
        else:
            if node is None:
                node = {}
            if not isinstance(node, Mapping):
                raise SetError(f"--set {option!r}: {where}: {_path_text(path)} is not a mapping")
            node = node.get(token)
        path.append(token)
    return tuple(path)


def _path_text(path: Sequence[Token]) -> str:
    text = ""
    for token in path:
        text += f"[{token}]" if isinstance(token, int) else (f".{token}" if text else token)
    return text


def parse_set(option: str, config: Mapping[str, Any]) -> SetOption:
    """``KEY=V1,V2``, checked against the stack's config block."""
    key, sep, values_text = option.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SetError(f"--set {option!r}: expected KEY=VALUE[,VALUE...], e.g. garo:groups[0].warmPool.size=0,1,2")
    if not values_text.strip():
        raise SetError(f"--set {option!r}: no values after '=' for {key}")
    values: list[Any] = []
    for raw in values_text.split(","):
        raw = raw.strip()
        if not raw:
            raise SetError(f"--set {option!r}: an empty value in the list for {key}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list):
            raise SetError(f"--set {option!r}: {key}: values are single numbers, booleans or strings, got {raw!r}")
        values.append(value)
    if len(set(map(repr, values))) != len(values):
        raise SetError(f"--set {option!r}: {key}: a value is given twice")
    path = _resolve(_tokens(key, option), config, key, option)
    return SetOption(option, key, path, tuple(values))


def apply(config: Mapping[str, Any], changes: Sequence[tuple[tuple[Token, ...], Any]]) -> dict[str, Any]:
    """A copy of the config block with each (path, value) set; missing mappings on the way are created."""
    out = copy.deepcopy(dict(config))
    for path, value in changes:
        node: Any = out
        for token in path[:-1]:
            if isinstance(token, int):
                node = node[token]
            else:
                if node.get(token) is None:
                    node[token] = {}
                node = node[token]
        node[path[-1]] = value
    return out


@dataclass(frozen=True)
class Variant:
    """One combination of --set values, and the stack it makes."""

    changes: tuple[tuple[tuple[Token, ...], Any], ...]
    label: str
    raw: dict[str, Any]
    config: StackConfig


def variants(config: Mapping[str, Any], options: Sequence[SetOption], source: str) -> list[Variant]:
    """The cartesian product of the options' values, each validated as a stack (ConfigError names the key path)."""
    out: list[Variant] = []
    for combo in itertools.product(*(o.values for o in options)):
        changes = tuple((o.path, v) for o, v in zip(options, combo, strict=True))
        label = ", ".join(f"{o.key}={v}" for o, v in zip(options, combo, strict=True)) or "as in the stack file"
        raw = apply(config, changes)
        try:
            stack = parse_stack_config(raw, f"{source} with {label}")
        except ConfigError as exc:
            raise SetError(str(exc)) from None
        out.append(Variant(changes, label, raw, stack))
    return out


# ---------------------------------------------------------------------------- choosing


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indexes of the points no other point beats on both (cost, p95 wait), by cost; ties keep the first."""
    front: list[int] = []
    best_wait = float("inf")
    for i in sorted(range(len(points)), key=lambda k: (points[k][0], points[k][1], k)):
        if points[i][1] < best_wait:
            front.append(i)
            best_wait = points[i][1]
    return front


def cheapest_meeting(points: Sequence[tuple[float, float]], target_p95: float) -> int | None:
    """The cheapest point whose p95 wait is within the target (the first of equals), or None."""
    meeting = [i for i, (_, wait) in enumerate(points) if wait <= target_p95]
    return min(meeting, key=lambda i: (points[i][0], points[i][1], i)) if meeting else None


def parse_duration(text: str) -> float:
    """``45s``, ``2m``, ``1h`` or plain seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h)?\s*", text)
    if match is None:
        raise ValueError(f"expected a duration like 45s, 2m or 1h, got {text!r}")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600, None: 1}[match[2]]


# ---------------------------------------------------------------------------- the diff


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def _find(node: yaml.Node, token: Token) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if getattr(k, "value", None) == token), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(token, int) and token < len(node.value):
        child: yaml.Node = node.value[token]
        return child
    return None


def _edit_one(text: str, path: Sequence[Token], value: Any) -> str:
    node = yaml.compose(text)
    if node is None:
        raise LookupError(path)
    for i, token in enumerate(path):
        child = _find(node, token)
        if child is None:
            if not isinstance(node, yaml.MappingNode) or isinstance(token, int):
                raise LookupError(path)
            rest = value
            for key in reversed(path[i + 1 :]):
                rest = {key: rest}
            if node.flow_style or not node.value:
                start, end = node.start_mark.index, node.end_mark.index
                current = yaml.safe_load(text[start:end]) or {}
                current[token] = rest
                return text[:start] + _flow(current) + text[end:]
            lines = text.splitlines(keepends=True)
            indent = node.value[0][0].start_mark.column
            last = node.value[-1][1].end_mark
            at = last.line if last.column == 0 or last.index >= len(text) else last.line + 1
            lines.insert(at, " " * indent + f"{token}: {_flow(rest)}\n")
            return "".join(lines)
        node = child
    start, end = node.start_mark.index, node.end_mark.index
    return text[:start] + _flow(value) + text[end:]


def stack_diff(text: str, changes: Sequence[tuple[tuple[Token, ...], Any]], filename: str) -> str:
    """A unified diff that sets each change in the stack file's text, touching only the lines that change."""
    document = yaml.safe_load(text)
    expected = dict(document)
    expected["config"] = apply(document["config"], changes)
    new = text
    try:
        for path, value in changes:
            new = _edit_one(new, ("config", *path), value)
        if yaml.safe_load(new) != expected:
            raise LookupError("edit did not land")
    except (LookupError, yaml.YAMLError):
        new = yaml.safe_dump(expected, sort_keys=False)  # layout lost, content exact
    return "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), f"a/{filename}", f"b/{filename}"))
