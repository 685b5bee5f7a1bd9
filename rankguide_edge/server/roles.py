"""Which model answers a request: the ``model`` field picks the router, the SRM alone or the LRM alone.

The server holds both models, so it serves three ids (docs/SERVER.md):

* the routed id (``--model-name``, default ``rankguide-edge``): the SRM drafts, the policy routes, per-request
  ``rankguide`` settings apply;
* ``srm``: the small model alone (policy ``srm``, no plan): every token is the SRM's;
* ``lrm``: the large model alone (policy ``lrm``): every step is the LRM's; listed only when the server has an LRM.

A model's own name (``--srm`` / ``--lrm`` as given, or a GGUF file's name without ``.gguf``) is accepted as an
alias of ``srm`` or ``lrm`` when it names exactly one of them. The roles' settings are fixed: a ``rankguide``
routing key on ``srm`` or ``lrm`` is refused (400), and so is steering on ``lrm`` (steering acts on the SRM).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .schemas import RequestError

SRM_ID = "srm"
LRM_ID = "lrm"
#: rankguide keys that choose how steps are routed: meaningless for a model that answers alone
ROUTING_KEYS = ("policy", "threshold", "decide", "max_lrm_share", "lrm_first")
STEERING_KEYS = ("steer", "steer_scale", "steer_where")


@dataclass(frozen=True)
class Role:
    """One served id: ``name`` is "router", "srm" or "lrm"; ``forced`` the ReasonerConfig fields it pins."""

    name: str
    forced: dict[str, Any]
    refused: tuple[str, ...]


ROUTER = Role("router", {}, ())
SRM_ALONE = Role("srm", {"policy": "srm", "lrm_first": 0}, ROUTING_KEYS)
LRM_ALONE = Role("lrm", {"policy": "lrm", "lrm_first": 0, "max_lrm_share": 1.0}, ROUTING_KEYS + STEERING_KEYS)


def own_names(spec: str) -> set[str]:
    """The names a model given as ``spec`` answers to: the spec and, for a file, its name without ``.gguf``."""
    if not spec:
        return set()
    names = {spec}
    if spec.lower().endswith(".gguf") or os.sep in spec:
        names.add(os.path.basename(spec).removesuffix(".gguf"))
    return names


class ModelRoles:
    """The ids a server answers to, for its routed id, its SRM spec and its LRM spec (``lrm=""``: no LRM)."""

    def __init__(self, routed_id: str, srm: str, lrm: str) -> None:
        self.routed_id, self.srm, self.lrm = routed_id, srm, lrm
        srm_names, lrm_names = own_names(srm), own_names(lrm)
        self._aliases = {n: SRM_ID for n in srm_names - lrm_names} | {n: LRM_ID for n in lrm_names - srm_names}

    def ids(self) -> list[str]:
        """The listed ids: the routed one, ``srm``, and ``lrm`` when there is an LRM."""
        return [self.routed_id, SRM_ID] + ([LRM_ID] if self.lrm else [])

    def canonical(self, name: str) -> str:
        """The listed id ``name`` stands for; RequestError 404 (OpenAI's ``model_not_found``) when none."""
        if name == self.routed_id:
            return name
        role_id = name if name in (SRM_ID, LRM_ID) else self._aliases.get(name)
        if role_id == LRM_ID and not self.lrm:
            raise RequestError(404, f"model {name!r} is not served here: this server has no LRM; use "
                                    f"{self.routed_id!r} or 'srm' (see GET /v1/models)",
                               param="model", code="model_not_found")
        if role_id is None:
            raise RequestError(404, f"model {name!r} is not served here: use one of "
                                    f"{', '.join(repr(i) for i in self.ids())} (see GET /v1/models)",
                               param="model", code="model_not_found")
        return role_id

    def role(self, name: str) -> Role:
        """The role that answers a request for ``name`` (404 for an unknown id)."""
        cid = self.canonical(name)
        return SRM_ALONE if cid == SRM_ID else LRM_ALONE if cid == LRM_ID else ROUTER

    def changes(self, name: str, requested: dict[str, Any]) -> dict[str, Any]:
        """The ReasonerConfig changes of a request for ``name`` that asked for ``requested``: the role's pinned
        settings win; a key the role cannot honour is a 400 naming the field."""
        role = self.role(name)
        for key in role.refused:
            if key in requested:
                raise RequestError(400, f"model {name!r} answers alone and takes no rankguide.{key}: drop it, "
                                        f"or use model {self.routed_id!r} for routing", param=f"rankguide.{key}",
                                   code="invalid_input")
        return {**requested, **role.forced}

    def card_model(self, cid: str) -> str:
        """The model behind a listed id (its spec as the server was given it)."""
        return self.srm if cid == SRM_ID else self.lrm
