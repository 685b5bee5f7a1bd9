"""Which LRM a solver gets: the one rule for when an LRM is needed, and the one factory from settings to backend.

The solver front (:class:`rankguide_edge.collab.solver.Solver`: the CLI, the server and ``bench run``) opens
its LRM here, so they agree on when one is loaded and on how a spec is read (:func:`~.backends.parse_spec`: a
URL is remote, a model name or GGUF path local, ``<kind>:<target>`` a registered kind).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..config import bounded, same_as
from .backends import LRMBackend, make_backend, parse_spec
from .backends_remote import RemoteConfig
from .routing import StepRouter

if TYPE_CHECKING:
    from ..config import RuntimeConfig
    from ..engine.model import Model
    from .reasoner import ReasonerConfig


def config_needs_lrm(config: ReasonerConfig, routing: StepRouter | None = None) -> bool:
    """Whether a solver with ``config`` calls an LRM (:func:`~.routing.needs_lrm` with the plan the router
    gives; ``routing``: the config's router when the caller built it already)."""
    return (routing if routing is not None else StepRouter(config)).needs_lrm


def is_local(spec: str) -> bool:
    """Whether ``spec`` names a model this process loads (a name or GGUF path), not a server."""
    return parse_spec(spec)[0] == "local"


@dataclasses.dataclass(frozen=True)
class RemoteOptions:
    """How a remote LRM is called (None: the backend's default, :class:`~.backends_remote.RemoteConfig`)."""

    model: str | None = same_as(RemoteConfig, "model", default=None)
    api_key: str | None = bounded(None, env="RANKGUIDE_EDGE_LRM_API_KEY",
                                  help="API key of a remote LRM, sent as a Bearer token")
    timeout: float | None = same_as(RemoteConfig, "timeout", default=None)
    retries: int | None = same_as(RemoteConfig, "retries", default=None)

    def as_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != ""}


def open_backend(spec: str, *, runtime: RuntimeConfig | None = None, remote: RemoteOptions | None = None,
                 template_model: Model | None = None, model: Model | None = None,
                 progress: bool = False) -> LRMBackend:
    """The backend ``spec`` names. A local one loads the model with ``runtime`` (or borrows the loaded
    ``model``, sharing its weights); any other kind gets ``remote``'s options and formats prompts with
    ``template_model``'s chat template (the SRM's, typically)."""
    kind, target = parse_spec(spec)
    if kind == "local":
        from .backends_local import LocalBackend

        return LocalBackend(model if model is not None else target, runtime, progress=progress)
    return make_backend(spec, template_model=template_model, **(remote or RemoteOptions()).as_kwargs())


def open_lrm(config: ReasonerConfig, spec: str | None, *, routing: StepRouter | None = None,
             **options: Any) -> LRMBackend | None:
    """The LRM backend a solver with ``config`` needs (``options`` as :func:`open_backend`'s), or None when
    ``spec`` is empty or ``config`` never calls an LRM (:func:`config_needs_lrm`)."""
    if not spec or not config_needs_lrm(config, routing):
        return None
    return open_backend(spec, **options)
