"""The layers of docs/DESIGN.md import only downward: every import in the package (function-level ones too) is
read with ``ast`` and its target's layer compared with the importer's."""

from __future__ import annotations

import ast
from pathlib import Path

import rankguide_edge

PACKAGE = Path(rankguide_edge.__file__).parent
#: bottom to top, as in docs/DESIGN.md "Layers"; a module's layer is its first matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("config", "errors", "files", "jsonl", "records", "stats", "figures")),
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
