"""The house of moire_cli's configs: one module per concept, no import circle, a few hundred lines each."""

from __future__ import annotations

from pathlib import Path

from tests.alter.test_structure import find_cycle, import_graph

PKG = Path(__file__).resolve().parents[2] / "moire_cli"


def _reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph[n])
    return seen


def test_no_import_circle_through_the_configs():
    """No circle among moire_cli.config and everything it imports (the configs are read first by every
    command, so a circle there breaks them all)."""
    graph = import_graph(PKG)
    assert "moire_cli.config.common" in graph["moire_cli.config.melt"]  # the graph sees real imports
    nodes = _reachable(graph, [n for n in graph if n.startswith("moire_cli.config")])
    assert "moire_cli.crystals" in nodes and "moire_cli.cli" not in nodes
    assert find_cycle({n: graph[n] & nodes for n in nodes}) is None


def test_config_modules_by_concept():
    graph = import_graph(PKG)
    for module in ("common", "materials", "system", "phonons"):  # the shared parts know no command's loader
        assert "moire_cli.config.loading" not in graph[f"moire_cli.config.{module}"], module
        assert "moire_cli.config.melt" not in graph[f"moire_cli.config.{module}"], module
    for path in (PKG / "config").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name
