"""How a package exports: names resolved on first use, so importing a package does no work.

Every ``__init__`` that exports names does it the same way::

    _EXPORTS = {"Solver": ".collab.solver", ...}      # public name -> module (relative to the package)
    __getattr__ = lazy_exports(__name__, _EXPORTS)
    __all__ = [...]                                   # the same names, written out
    if TYPE_CHECKING:
        from .collab.solver import Solver             # what type checkers and editors see
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], *,
                 before: Callable[[str], None] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` is imported from ``exports[name]`` (a module path,
    relative to ``package`` when it starts with a dot) the first time it is asked for. ``before(module)`` runs
    before that import (the server checks its optional dependencies there)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before is not None:
            before(module)
        return getattr(importlib.import_module(module, package), name)

    return __getattr__


__all__ = ["lazy_exports"]
