"""The layers of docs/DESIGN.md import only downward, and no folder imports one that imports it back: every
import in the package (function-level ones too) is read with ``ast`` and its target's layer compared with the
importer's."""

from __future__ import annotations

import ast
from pathlib import Path

import rankguide_edge

PACKAGE = Path(rankguide_edge.__file__).parent
#: bottom to top, as in docs/DESIGN.md "Layers"; a module's layer is its first matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("config", "errors", "files", "jsonl", "records", "stats", "figures", "_exports")),
    ("engine", ("engine",)),
    ("signals", ("signals",)),
    ("steering", ("steering",)),
    ("tasks", ("tasks",)),
    ("collab", ("collab",)),
    ("bench", ("bench",)),
    ("fitting", ("fitting",)),
    ("api", ("api", "doctor")),
    ("edges", ("server", "cli", "testing")),
]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "rankguide_edge" or len(parts) < 2:
        return None  # the package root (re-exports nothing layered) or a third-party module
    for rank, (_, heads) in enumerate(LAYERS):
        if parts[1] in heads:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/DESIGN.md")


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(("rankguide_edge", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imports_of(path: Path) -> list[tuple[str, int]]:
    module = module_of(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [_submodule_or(target, a.name) for a in node.names]
            out += [(n, node.lineno) for n in names]
    return out


def _submodule_or(package: str, name: str) -> str:
    """``package.name`` when that is a module of the package, else ``package`` (``name`` is an attribute)."""
    folder = PACKAGE.joinpath(*package.split(".")[1:], name)
    return f"{package}.{name}" if folder.with_suffix(".py").exists() or folder.is_dir() else package


def test_every_layer_imports_only_downward() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = layer_of(module_of(path))
        if own is None:
            continue
        for target, line in imports_of(path):
            other = layer_of(target)
            if other is not None and other > own:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({LAYERS[own][0]}) imports {target} "
                             f"({LAYERS[other][0]})")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_an_upward_import() -> None:
    assert layer_of("rankguide_edge.tasks.answers") > layer_of("rankguide_edge.steering.extract")
    assert layer_of("rankguide_edge.engine.prompts") < layer_of("rankguide_edge.steering.extract")


def _unit(module: str) -> str | None:
    """The folder (or root module) a module belongs to: ``rankguide_edge.fitting.label`` -> ``fitting``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "rankguide_edge" and len(parts) > 1 else None


def folder_imports() -> dict[str, set[str]]:
    """Which folders (and root modules) each one imports, function-level imports included."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _unit(module_of(path))
        if own is None:
            continue
        graph.setdefault(own, set()).update(u for target, _ in imports_of(path)
                                            if (u := _unit(target)) is not None and u != own)
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_no_import_circle_across_folders() -> None:
    """Within a layer too (base's root modules; server, cli and testing at the edges), no folder imports one
    that imports it back."""
    graph = folder_imports()
    assert {"tasks", "bench", "fitting", "stats", "records", "figures"} <= set(graph)
    assert graph["fitting"] >= {"bench", "tasks", "stats", "records"} and "fitting" not in graph["bench"]
    cycle = import_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
