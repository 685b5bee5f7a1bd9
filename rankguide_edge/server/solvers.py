"""Solvers for the server's workers: the models are loaded once and shared, each worker gets its own contexts.

:class:`SharedModelSolvers` is the default ``solver_factory`` of :func:`~rankguide_edge.server.create_app`:
called with a worker index it returns a :class:`PooledSolver`, a Reasoner (built by
:func:`~rankguide_edge.collab.solver.open_reasoner`) over the shared SRM with its own tapped SRM context and its
own LRM backend (a local LRM's weights are shared too; each backend keeps its own
context, so one worker's LRM cache never mixes with another's conversation).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from .settings import ServerConfig


class PooledSolver:
    """One worker's solver: a Reasoner over a borrowed SRM Model that owns its LRM backend (or has none).

    Same surface as :class:`~rankguide_edge.api.Solver` for the server: ``config``, ``srm``, ``lrm``,
    :meth:`chat`, :meth:`reconfigure`, :meth:`close`.
    """

    def __init__(self, reasoner: Any) -> None:
        self.reasoner = reasoner
        self.srm = reasoner.srm
        self.config = reasoner.config

    @property
    def lrm(self) -> Any | None:
        return self.reasoner.lrm

    def chat(self, messages: Sequence[tuple[str, str]], on_event: Any = None) -> Any:
        """One assistant turn (a :class:`~rankguide_edge.collab.reasoner.SolveResult`)."""
        return self.reasoner.solve(list(messages), on_event=on_event)

    def reconfigure(self, **changes: Any) -> None:
        self.reasoner.reconfigure(**changes)
        self.config = self.reasoner.config

    def close(self) -> None:
        self.reasoner.close()  # and its LRM backend


class SharedModelSolvers:
    """``factory(index) -> PooledSolver`` for ``settings``; loads the models on the first call, closes them
    in :meth:`close` (after the solvers are closed)."""

    def __init__(self, settings: ServerConfig, *, progress: bool = False) -> None:
        self.settings = settings
        self.progress = progress
        self.config = settings.reasoner_config()  # ConfigError now rather than at the first request
        self.runtime = settings.runtime_config()
        self._lock = threading.Lock()
        self._srm: Any = None
        self._lrm_model: Any = None

    @property
    def uses_lrm(self) -> bool:
        from ..collab.lrm import config_needs_lrm

        return bool(self.settings.lrm) and config_needs_lrm(self.config)

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

    def __call__(self, index: int) -> PooledSolver:
        """Worker ``index``'s solver: its own SRM context and LRM backend (its own context over the shared
        weights, or its own connection)."""
        from ..collab.lrm import RemoteOptions
        from ..collab.solver import open_reasoner

        s = self.settings
        with self._lock:
            self._load()
            return PooledSolver(open_reasoner(
                self._srm, self.config, lrm=s.lrm or None, runtime=self.runtime, lrm_model=self._lrm_model,
                remote=RemoteOptions(model=s.lrm_model, api_key=s.lrm_api_key, timeout=s.lrm_timeout,
                                     retries=s.lrm_retries)))

    def close(self) -> None:
        with self._lock:
            if self._lrm_model is not None and self._lrm_model is not self._srm:
                self._lrm_model.close()
            if self._srm is not None:
                self._srm.close()
            self._srm = self._lrm_model = None
