"""Settings to solver: the one place a :class:`~.reasoner.Reasoner` is built together with its LRM backend.

The API (:class:`rankguide_edge.api.Solver`), the server's workers (``server/solvers.py``), ``bench run``
(:func:`rankguide_edge.evaluation.bench.run_bench`) and ``label`` call :func:`open_reasoner`, so they attach an
LRM under the same rule (:func:`~.lrm.config_needs_lrm`) and read a spec the same way (:func:`~.lrm.open_lrm`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import LRMBackend
from .lrm import RemoteOptions, config_needs_lrm, open_lrm
from .reasoner import Reasoner, ReasonerConfig

if TYPE_CHECKING:
    from ..config import RuntimeConfig
    from ..engine.model import Model
    from ..signals.step import SignalConfig


def open_reasoner(srm: Model, config: ReasonerConfig, *, lrm: str | LRMBackend | None = None,
                  runtime: RuntimeConfig | None = None, signals: SignalConfig | None = None,
                  remote: RemoteOptions | None = None, lrm_model: Model | None = None, details: bool = False,
                  progress: bool = False) -> Reasoner:
    """A Reasoner over the loaded ``srm`` with ``config`` and the LRM that config needs.

    ``lrm`` a spec (model name, GGUF path or URL): the backend is opened here when ``config`` calls an LRM
    (a local one loads with ``runtime``, or borrows the weights of ``lrm_model``; a remote one gets ``remote``
    and the SRM's chat template) and the Reasoner owns it (closed with it). ``lrm`` an open backend: borrowed
    (the caller closes it), attached only when ``config`` calls an LRM. None: no LRM.
    """
    if isinstance(lrm, str):
        backend = open_lrm(config, lrm, runtime=runtime, template_model=srm, model=lrm_model, progress=progress,
                           remote=remote)
        try:
            return Reasoner(srm, backend, config, signals=signals, runtime=runtime, details=details,
                            own_lrm=True)
        except BaseException:
            if backend is not None:
                backend.close()
            raise
    backend = lrm if lrm is not None and config_needs_lrm(config) else None
    return Reasoner(srm, backend, config, signals=signals, runtime=runtime, details=details)


__all__ = ["open_reasoner"]
