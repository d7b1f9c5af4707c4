"""The zoo's import graph has no cycle, counting imports inside functions too.

The graph is read from the source (ast), not from `sys.modules`: every `import zoo.x`,
`from zoo import x`, `from zoo.x import y` and relative import, at module level or inside a
function, is an edge. `from zoo import name` where `name` is not a submodule is an edge to the
package top (`zoo`), which itself imports the factory: so a module that loads backbones through
`import zoo` is a cycle too. `python tests/test_factory_imports.py` prints the graph.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "zoo"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ZOO.rglob("*.py"))}


def _target(name: str, modules) -> str | None:
    """The zoo module `name` is, or lies in (zoo.x.y -> zoo.x when y is an attribute)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, dict[str, str]]:
    """{module: {imported zoo module: "module" | "function"}} for every module of the package."""
    modules = _modules()
    graph: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, str] = {}
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from zoo import weights` imports zoo.weights; `from zoo import create_model`, the top
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                t = _target(t, modules)
                if t is None or t == name:
                    continue
                where = "module" if id(node) in top_level else "function"
                if edges.get(t) != "module":
                    edges[t] = where
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


# ------------------------------------------------------------------------------------------------

def test_no_import_cycle_among_zoo_modules():
    graph = import_graph()
    assert {"zoo.factory", "zoo.timm_entries", "zoo.weights", "zoo.evaluation"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b": "module"}, "b": {"c": "function"}, "c": {"a": "function"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": "module"}, "b": {}, "c": {"a": "module", "b": "function"}}) is None


def test_load_path_layers():
    """weights (table, resolution, checks) depends on no other loader; nothing loads through the top."""
    graph = import_graph()
    assert not {"zoo.factory", "zoo.timm_entries", "zoo"} & set(graph["zoo.weights"])
    assert "zoo.factory" not in graph["zoo.timm_entries"]
    assert "zoo" not in graph["zoo.evaluation"]


if __name__ == "__main__":
    for module, edges in import_graph().items():
        if len(sys.argv) == 1 or module in sys.argv[1:]:
            print(module, "->", ", ".join(f"{t}{'' if w == 'module' else ' (in a function)'}"
                                          for t, w in sorted(edges.items())) or "-")
    print("cycle:", find_cycle(import_graph()))
