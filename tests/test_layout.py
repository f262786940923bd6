"""The package's layout: no import cycles between its modules, and the dependency rules that keep
the pipeline readable (the command line on top, evaluation apart from the method)."""

from __future__ import annotations

import ast
from pathlib import Path

import agnostic_saliency

PACKAGE = Path(agnostic_saliency.__file__).parent
NAME = "agnostic_saliency"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from <level dots><target> import ...``."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (top level or inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (absolute(name, path.name == "__init__.py", node.level, node.module) if node.level
                        else node.module or "")
                # ``from pkg import sub`` imports the submodule where one exists, else the package
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # ``import a.b.c`` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(NAME):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from where it was entered)."""
    found, state = [], {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                found.append(stack[stack.index(child):] + [child])
            elif child not in state:
                visit(child)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_to_modules():
    graph = import_graph()
    assert f"{NAME}.method.engine" in graph[f"{NAME}.api"]
    assert f"{NAME}.models.running" in graph[f"{NAME}.backdoor.scan"]
    assert f"{NAME}.errors" in graph[f"{NAME}.models.spec"]


def test_no_import_cycles():
    # Package __init__ files only re-export; a module importing its own package's __init__ is
    # counted, so a cycle through a re-export shows up as well.
    assert cycles(import_graph()) == []


def test_dependency_rules():
    graph = import_graph()
    importers_of_cli = [m for m, targets in graph.items() if f"{NAME}.cli" in targets]
    assert importers_of_cli == [], "the command line is the top layer: nothing imports it"
    for module, targets in graph.items():
        if module.startswith(f"{NAME}.backdoor"):
            assert f"{NAME}.method.engine" not in targets, f"{module} imports the saliency engine"
        if module.startswith(f"{NAME}.metrics"):
            assert not any(t.startswith(f"{NAME}.method") for t in targets), f"{module} imports the method"
