"""engine/_native.py is the one module that reaches ctypes: every other module of the installed package (the
CLI included, installed as rankguide_edge.cli) speaks numpy and Python objects (read with ``ast``,
function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import rankguide_edge

PACKAGE = Path(rankguide_edge.__file__).parent


def _imports_ctypes(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ctypes" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "ctypes":
            return True
    return False


def test_only_the_native_module_imports_ctypes() -> None:
    assert (PACKAGE / "cli" / "main.py").exists()  # the installed tree, CLI included
    users = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if _imports_ctypes(p))
    assert users == ["engine/_native.py"]
