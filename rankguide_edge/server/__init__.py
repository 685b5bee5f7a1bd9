"""``rankguide-edge serve``: a local OpenAI-compatible endpoint over the collaborative reasoner.

Needs the ``server`` extra (``pip install 'rankguide-edge[server]'``: FastAPI and uvicorn). Importing this
package does no work and needs neither; the names below are imported on first use:

* :func:`create_app` (``.app``) -- the FastAPI app and its worker pool;
* :class:`ServerConfig` (``.settings``) -- host, port, models, queue and default routing settings;
* :class:`BackgroundServer`, :func:`serve` (``.runner``) -- uvicorn in a thread or in the foreground;
* :class:`SharedModelSolvers` (``.solvers``) -- the default solver factory (models shared by the workers).
"""

from __future__ import annotations

import importlib

from .._exports import lazy_exports

_LAZY = {
    "create_app": ".app",
    "ServerConfig": ".settings",
    "BackgroundServer": ".runner",
    "serve": ".runner",
    "SharedModelSolvers": ".solvers",
    "Metrics": ".metrics",
}
_NEEDS_DEPS = {".app", ".runner"}


def require_server_deps() -> None:
    """Raise DependencyError (naming the extra to install) when FastAPI or uvicorn is missing."""
    from ..errors import DependencyError

    for name in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise DependencyError(f"the server needs {name}: pip install 'rankguide-edge[server]'") from None


def _check(module: str) -> None:
    if module in _NEEDS_DEPS:
        require_server_deps()


__getattr__ = lazy_exports(__name__, _LAZY, before=_check)


__all__ = ["BackgroundServer", "Metrics", "ServerConfig", "SharedModelSolvers", "create_app",
           "require_server_deps", "serve"]
