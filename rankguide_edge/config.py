"""Typed configuration: one frozen dataclass per surface, with bounds, shared by CLI, config files and server.

Fields carry their bounds in ``metadata`` (``lo``/``hi``, inclusive, or ``choices``). :func:`from_mapping`
builds a config from a plain mapping (a TOML/JSON file, a request body) and rejects unknown keys,
wrong types and out-of-bound values with :class:`~rankguide_edge.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def bounded(default: Any, *, lo: float | None = None, hi: float | None = None,
            choices: tuple[Any, ...] | None = None, help: str = "") -> Any:
    """A dataclass field with documented bounds, checked by :func:`validate`."""
    return dataclasses.field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "help": help})


def field_bounds(cls: type, name: str) -> tuple[Any, Any, Any]:
    """``(default, lo, hi)`` of field ``name`` of the config dataclass ``cls``: a surface that re-declares a
    setting (a CLI option, the server's config) reads its numbers here instead of repeating them."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default, f.metadata.get("lo"), f.metadata.get("hi")


_SAME = object()


def same_as(cls: type, name: str, *, help: str = "", default: Any = _SAME) -> Any:
    """A field with the default and bounds of ``cls.name`` (its help and default too, unless others are given)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return bounded(f.default if default is _SAME else default, lo=f.metadata.get("lo"), hi=f.metadata.get("hi"),
                   choices=f.metadata.get("choices"), help=help or f.metadata.get("help", ""))


def validate(cfg: Any) -> None:
    """Check every field of a config dataclass against its bounds; raise ConfigError on the first miss."""
    name = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{name}.{f.name}={value!r} is not one of {', '.join(map(str, choices))}")
        if value is None or isinstance(value, bool):
            continue
        if lo is not None and value < lo:
            raise ConfigError(f"{name}.{f.name}={value!r} is below its minimum {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{name}.{f.name}={value!r} is above its maximum {hi}")


def _coerce(cls_name: str, key: str, value: Any, annotation: Any) -> Any:
    """Accept ints for float fields and lists for tuple fields; reject other type mismatches."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and type(None) in args):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(cls_name, key, value, non_none[0])
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    simple = {int: int, float: float, str: str, bool: bool}.get(annotation)
    if simple is not None:
        if isinstance(value, bool) and simple is not bool:
            raise ConfigError(f"{cls_name}.{key} must be {simple.__name__}, got {value!r}")
        if not isinstance(value, simple):
            raise ConfigError(f"{cls_name}.{key} must be {simple.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, **overrides: Any) -> T:
    """Build ``cls`` from ``data`` plus keyword overrides (``None`` overrides are ignored).

    Unknown keys raise ConfigError naming the valid ones.
    """
    merged = dict(data or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(cls.__name__, k, v, hints[k]) for k, v in merged.items()}
    cfg = cls(**kwargs)
    validate(cfg)
    return cfg


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How a GGUF model is loaded into a llama.cpp context."""

    n_ctx: int = bounded(4096, lo=16, hi=262144, help="context window in tokens")
    n_batch: int = bounded(512, lo=1, hi=65536, help="max tokens per llama_decode call (prefill chunk)")
    n_threads: int = bounded(0, lo=0, hi=1024, help="CPU threads; 0 = all cores")
    n_gpu_layers: int = bounded(0, lo=-1, hi=10000, help="layers offloaded to a GPU; -1 = all")
    extra_buffers: bool = bounded(False, help="llama.cpp extra CPU buffer types (AMX/repack); crash-prone, see docs")
    seed: int = bounded(0, lo=0, hi=2**31 - 1, help="seed of the sampler RNG")
    top_logprobs: int = bounded(5, lo=0, hi=64, help="top-k log-probabilities kept per generated token")

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen. temperature 0 means greedy (argmax, ties to the lowest id)."""

    temperature: float = bounded(0.0, lo=0.0, hi=10.0, help="0 = greedy")
    top_p: float = bounded(1.0, lo=0.0, hi=1.0, help="nucleus mass kept when sampling")
    max_tokens: int = bounded(512, lo=1, hi=262144, help="tokens to generate at most")
    stop: tuple[str, ...] = bounded((), help="stop strings (the text is cut before them)")

    def __post_init__(self) -> None:
        validate(self)
