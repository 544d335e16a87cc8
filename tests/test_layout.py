"""The layout a new contributor reads: the README's picture points at real modules, and modules form no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE_PATH = re.compile(r"\b(?:scaler|infra|images)/[\w./-]*\w")


def readme_picture() -> str:
    """The first fenced block of README.md: the flow picture."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("```", 2)[1]


def test_every_module_the_readme_picture_names_exists() -> None:
    named = MODULE_PATH.findall(readme_picture())
    missing = [path for path in named if not (ROOT / path).is_file()]
    assert missing == [], f"README's flow picture names modules that do not exist: {missing}"
    # One module per step of the flow, at least: webhook, bus, agent, backend, GitHub, the stack and infra.
    for step in ("scaler/webhook/", "scaler/bus/", "scaler/agent/", "scaler/backends/", "scaler/github/", "infra/"):
        assert any(path.startswith(step) for path in named), f"the picture names no module under {step}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """scaler module -> the scaler modules it imports anywhere (top level, in functions, for type checking)."""
    modules = {_module_name(p): p for p in (ROOT / "scaler").rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names if alias.name.startswith("scaler")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scaler"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else resolve(node.module))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, or [] (depth-first search, colouring nodes in progress)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph.get(node, ())):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return []

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return []


def test_scaler_modules_import_each_other_without_a_cycle() -> None:
    """A cycle is hidden by a late import until someone imports the other module first (the config/routing one was)."""
    graph = _imports()
    assert "scaler.config.routing" in graph["scaler.config.stack"]  # the checker sees imports inside packages
    assert _cycle(graph) == []


def test_a_cycle_is_found() -> None:
    graph = {"scaler.config": {"scaler.config.stack"}, "scaler.config.stack": {"scaler.routing"}}
    assert _cycle({**graph, "scaler.routing": {"scaler.config"}}) == [
        "scaler.config",
        "scaler.config.stack",
        "scaler.routing",
        "scaler.config",
    ]
    assert _cycle(graph) == []
