"""The house of alter_cli: no import circles (counting lazy imports inside functions), modules of a few hundred lines."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "alter_cli"


def _module_name(path: Path, pkg: Path = PKG) -> str:
    rel = path.relative_to(pkg.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> modules of package ``pkg`` (default alter_cli) it imports anywhere in its body (top
    level or inside a function)."""
    modules = {_module_name(p, pkg): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name and d != pkg.name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if colour.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in colour and (c := visit(m)):
                return c
        colour[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in colour and (c := visit(n)):
            return c
    return None


def test_cycle_finder_finds_a_lazy_circle():
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_alter_cli():
    graph = import_graph()
    assert "alter_cli.checkpoint" in graph["alter_cli.baseline"]  # the graph sees real imports
    assert find_cycle(graph) is None, find_cycle(graph)


def test_checkpoint_format_lives_apart_from_the_loop():
    graph = import_graph()
    assert "alter_cli.train" not in graph["alter_cli.checkpoint"]
    assert "alter_cli.baseline" not in graph["alter_cli.train"]
    for room in ("checkpoint", "train", "baseline", "cli", "runs"):
        assert len((PKG / f"{room}.py").read_text().splitlines()) <= 520, room
