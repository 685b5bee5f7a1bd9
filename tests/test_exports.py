"""Every package exports one way (rankguide_edge/_exports.py): names resolve on first use, so importing a
package loads none of its modules, and every name it lists does resolve."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import rankguide_edge

PACKAGE = Path(rankguide_edge.__file__).parent
INITS = sorted(PACKAGE.rglob("__init__.py"))
EXPORTING = [p for p in INITS if "__all__" in p.read_text(encoding="utf-8") and p.parent.name != "cli"]


def _package(init: Path) -> str:
    return ".".join(("rankguide_edge", *init.parent.relative_to(PACKAGE).parts))


@pytest.mark.parametrize("init", EXPORTING, ids=lambda p: _package(p))
def test_a_package_imports_its_modules_only_for_type_checkers(init: Path) -> None:
    tree = ast.parse(init.read_text(encoding="utf-8"))
    eager = [n.lineno for n in tree.body if isinstance(n, ast.ImportFrom) and n.level and n.module != "_exports"
             and not (n.level == 2 and n.module == "_exports")]
    assert not eager, f"{init}: names are exported with lazy_exports, not imported at lines {eager}"
    assert "lazy_exports(" in init.read_text(encoding="utf-8") or _package(init) == "rankguide_edge.engine"


@pytest.mark.parametrize("init", EXPORTING, ids=lambda p: _package(p))
def test_every_listed_name_resolves(init: Path) -> None:
    module = importlib.import_module(_package(init))
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{_package(init)}.{name}"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_importing_the_packages_loads_none_of_their_modules() -> None:
    names = [_package(p) for p in EXPORTING]
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names)
            + "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    ours = {m for m in loaded if m.startswith("rankguide_edge")} - set(names) - {"rankguide_edge._exports"}
    assert not ours, f"importing the packages loaded {sorted(ours)}"
    assert not {m for m in loaded if m.split(".")[0] in ("llama_cpp", "sklearn", "numpy")}
