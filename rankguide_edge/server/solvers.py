"""Solvers for the server's workers: the models are loaded once and shared, each worker gets its own contexts.

:class:`SharedModelSolvers` is the default ``solver_factory`` of :func:`~rankguide_edge.server.create_app`:
called with a worker index it returns a :class:`~rankguide_edge.collab.solver.Solver` (the one solver front)
over the shared SRM weights, with its own tapped SRM context and its own LRM backend (a local LRM's weights are
shared too; each backend keeps its own context, so one worker's LRM cache never mixes with another's
conversation).
"""

from __future__ import annotations

import threading
from typing import Any

from ..collab.reasoner import check_reasoner_config
from ..collab.solver import Solver
from .settings import ServerConfig


class SharedModelSolvers:
    """``factory(index) -> Solver`` for ``settings``; loads the models on the first call, closes them
    in :meth:`close` (after the solvers are closed)."""

    def __init__(self, settings: ServerConfig, *, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress
        self.config = settings.reasoner_config()  # ConfigError now rather than at the first request
        self.routing = check_reasoner_config(self.config)
        self.runtime = settings.runtime_config()
        self._lock = threading.Lock()
        self._srm: Any = None
        self._lrm_model: Any = None

    @property
    def uses_lrm(self) -> bool:
        return bool(self.settings.lrm) and self.routing.needs_lrm

    @property
    def remote_lrm(self) -> bool:
        from ..collab.lrm import is_local

        return bool(self.settings.lrm) and not is_local(self.settings.lrm)

    def _load(self) -> None:
        from ..collab.backends import parse_spec
        from ..engine import load_model

        if self._srm is None:
            self._srm = load_model(self.settings.srm, self.runtime, progress=self.progress)
        if self.uses_lrm and not self.remote_lrm and self._lrm_model is None:
            target = parse_spec(self.settings.lrm)[1]
            if target == self.settings.srm:
                self._lrm_model = self._srm
            else:
                self._lrm_model = load_model(target, self.runtime, progress=self.progress)

    def __call__(self, index: int) -> Solver:
        """Worker ``index``'s solver: its own SRM context and LRM backend (its own context over the shared
        weights, or its own connection)."""
        from ..collab.lrm import RemoteOptions

        s = self.settings
        with self._lock:
            self._load()
            return Solver(self._srm, s.lrm or None, config=self.config, runtime=self.runtime,
                          lrm_model=self._lrm_model, progress=False,
                          remote=RemoteOptions(model=s.lrm_model, api_key=s.lrm_api_key, timeout=s.lrm_timeout,
                                               retries=s.lrm_retries))

    def close(self) -> None:
        with self._lock:
            if self._lrm_model is not None and self._lrm_model is not self._srm:
                self._lrm_model.close()
            if self._srm is not None:
                self._srm.close()
            self._srm = self._lrm_model = None
