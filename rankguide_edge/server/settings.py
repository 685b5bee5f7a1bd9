"""The server's own configuration: one frozen, bounded dataclass shared by ``rankguide-edge serve`` options,
``--config FILE`` (TOML or JSON, flat keys) and :func:`~rankguide_edge.server.create_app`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..collab.backends_remote import RemoteConfig
from ..collab.lrm import RemoteOptions
from ..collab.reasoner import ReasonerConfig
from ..config import RuntimeConfig, bounded, from_mapping, same_as, validate
from ..engine.models import ModelPair


def check_reasoner_config(cfg: Any) -> Any:
    """``cfg`` (a ReasonerConfig) if its policy exists, can decide at ``cfg.decide`` and its router file loads;
    else ConfigError or InvalidInputError (both 400): :func:`rankguide_edge.collab.reasoner.check_reasoner_config`
    worded for the server's ``decide`` setting."""
    from ..collab.reasoner import check_reasoner_config as check

    check(cfg, decide_option="decide")
    return cfg


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the OpenAI-compatible endpoint listens, which models it serves and how requests are queued.

    ``threshold`` None uses the router's threshold for the decision point (``router``: a file written by
    ``rankguide-edge calibrate``, "" = the shipped default). ``lrm`` "" (or policy ``srm`` without a plan,
    ``lrm_first``: the rule of ``collab.lrm``) loads no LRM: every step is then the SRM's whatever a request asks.
    ``queue_size`` counts requests waiting for a free worker (those being served are not counted); one more is
    refused with 503. ``request_timeout`` bounds a request's whole life
    (queue wait included); 0 = no limit.
    """

    host: str = bounded("127.0.0.1", help="address to listen on")
    port: int = bounded(8080, lo=0, hi=65535, help="TCP port; 0 picks a free one")
    api_key: str = bounded("", env="RANKGUIDE_EDGE_API_KEY", unset="none: no key is asked",
                           help="require 'Authorization: Bearer KEY' on /v1/*")
    model_name: str = bounded("rankguide-edge", help="the model id clients send and /v1/models lists")
    srm: str = same_as(ModelPair, "srm")
    lrm: str = same_as(ModelPair, "lrm", help="large model: name, GGUF path or OpenAI-compatible URL; '' for none")
    lrm_model: str = same_as(RemoteConfig, "model", default="")
    lrm_api_key: str = same_as(RemoteOptions, "api_key", default="")
    lrm_timeout: float = same_as(RemoteConfig, "timeout")
    lrm_retries: int = same_as(RemoteConfig, "retries")
    # the workers' default ReasonerConfig: these fields are ReasonerConfig's (REASONER_FIELDS), bounds and all
    policy: str = same_as(ReasonerConfig, "policy")
    threshold: float | None = same_as(ReasonerConfig, "threshold")
    router: str = same_as(ReasonerConfig, "router")
    decide: str = same_as(ReasonerConfig, "decide")
    lrm_first: int | None = same_as(ReasonerConfig, "lrm_first")
    max_tokens: int = same_as(ReasonerConfig, "max_tokens", default=512, help="answer budget when a request "
                              "gives none")
    max_step_tokens: int = same_as(ReasonerConfig, "max_step_tokens")
    prefix_reuse: str = same_as(ReasonerConfig, "prefix_reuse", help="what a worker's SRM keeps of the last "
                                "prompt it read: exact (whole prefill blocks; answers equal a cold start's), all "
                                "(every common token, like llama-server's cache; faster, may differ in near-ties) "
                                "or off")
    n_ctx: int = same_as(RuntimeConfig, "n_ctx", help="context window in tokens of each worker's SRM (and of a "
                         "local LRM)")
    n_threads: int = same_as(RuntimeConfig, "n_threads", help="CPU threads per context; 0 = all cores")
    n_gpu_layers: int = same_as(RuntimeConfig, "n_gpu_layers")
    seed: int = same_as(ReasonerConfig, "seed", help="default sampling seed")
    parallel: int = bounded(1, lo=1, hi=64, help="workers, each with its own SRM context (models are shared)")
    queue_size: int = bounded(16, lo=0, hi=100000, help="requests allowed to wait for a worker; more get 503 with "
                              "Retry-After")
    request_timeout: float = bounded(600.0, lo=0.0, hi=86400.0, help="seconds a request may take, queue wait "
                                     "included; 0 = no limit")
    steer_dir: str = bounded("", path="dir", unset="none: requests cannot steer",
                             help="folder of control-vector .gguf files that requests may name in rankguide.steer "
                                  "(by file name, e.g. \"seal\")")

    def __post_init__(self) -> None:
        validate(self)
        if self.steer_dir and not os.path.isdir(self.steer_dir):
            from ..errors import ConfigError

            raise ConfigError(f"steer_dir {self.steer_dir} is not a folder: give the folder that holds the "
                              "control-vector .gguf files requests may name")

    def steering_vectors(self) -> list[str]:
        """The names requests may give as ``rankguide.steer``: the ``.gguf`` files of ``steer_dir``, sorted."""
        if not self.steer_dir:
            return []
        d = self.steer_dir
        return sorted(f[:-5] for f in os.listdir(d)
                      if f.endswith(".gguf") and not f.startswith(".") and os.path.isfile(os.path.join(d, f)))

    def steering_file(self, name: str) -> str:
        """The file a request's ``rankguide.steer`` names: ``NAME`` or ``NAME.gguf`` in ``steer_dir``, never a
        path, so that clients cannot make the server open arbitrary files ("" = no steering).
        InvalidInputError (400) for anything else, without revealing the server's paths."""
        from ..errors import InvalidInputError

        if not name:
            return ""
        if not self.steer_dir:
            raise InvalidInputError("this server offers no steering vectors: its operator can start it with "
                                    "--steer-dir DIR (a folder of control-vector .gguf files)")
        stem = name[:-5] if name.endswith(".gguf") else name
        offered = self.steering_vectors()
        if stem not in offered:  # names only: "/", "..", hidden files are never in the list
            what = ("rankguide.steer takes a vector's name, not a path" if "/" in name or "\\" in name
                    else f"unknown steering vector {name!r}")
            raise InvalidInputError(f"{what}: name one of the vectors this server offers, "
                                    f"{', '.join(offered) or 'none'} (GET /v1/models lists them)")
        return os.path.join(self.steer_dir, stem + ".gguf")

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None = None, **overrides: Any) -> ServerConfig:
        """``data`` (a config file's keys) plus non-None ``overrides``; unknown keys raise ConfigError."""
        return from_mapping(cls, data, **overrides)

    def reasoner_config(self) -> ReasonerConfig:
        """The workers' default :class:`~rankguide_edge.collab.reasoner.ReasonerConfig` (ConfigError if bad)."""
        data = {name: getattr(self, name) for name in REASONER_FIELDS}
        # a missing or malformed router file, or a policy that cannot decide there, is an error now
        return check_reasoner_config(from_mapping(ReasonerConfig, data))

    def runtime_config(self) -> RuntimeConfig:
        """The llama.cpp context settings of every worker."""
        return RuntimeConfig(n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed,
                             n_gpu_layers=self.n_gpu_layers)

    def public_dict(self) -> dict[str, Any]:
        """The settings with secrets masked (for logs and /health)."""
        d = dataclasses.asdict(self)
        for key in ("api_key", "lrm_api_key"):
            d[key] = "***" if d[key] else ""
        return d


#: the ServerConfig fields that are ReasonerConfig's (the workers' defaults), derived, never listed twice
REASONER_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ServerConfig)
                                         if f.name in {g.name for g in dataclasses.fields(ReasonerConfig)})
