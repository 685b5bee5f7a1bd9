"""Typed configuration: one frozen dataclass per surface, with bounds, shared by CLI, config files and server.

Fields carry their bounds in ``metadata`` (``lo``/``hi``, inclusive, or ``choices``) and their help; a CLI
option is generated from its field (``cli/_settings.py``), and a setting several configs carry is declared once
and repeated with :func:`same_as`. :func:`from_mapping` builds a config from a plain mapping (a TOML/JSON file,
a request body) and rejects unknown keys, wrong types and out-of-bound values with
:class:`~rankguide_edge.errors.ConfigError`. This module imports no CLI or server library.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def bounded(default: Any, *, lo: float | None = None, hi: float | None = None,
            choices: tuple[Any, ...] | None = None, help: str = "", flag: str | None = None,
            aliases: tuple[str, ...] = (), env: str | None = None, unset: str | None = None,
            path: str | None = None, metavar: str | None = None, sep: str | None = None,
            registry: Callable[[], Sequence[str]] | None = None) -> Any:
    """A dataclass field with documented bounds, checked by :func:`validate`.

    ``lo``/``hi`` are inclusive (a tuple field: each item), ``choices`` the allowed values, ``help`` says what the
    setting does (a CLI option's help and the server's docs are this text). The rest tells the surfaces that
    expose the field how to spell it; the config itself ignores them: ``flag`` the command-line name when it is
    not ``--field-name`` (``n_threads`` is ``--threads``), ``aliases`` more names, ``env`` an environment
    variable read when the option is not given, ``unset`` what the value None (or "") means, ``path`` "file" or
    "dir" for an existing path, ``metavar`` how the value is written, ``sep`` the separator of a tuple written as
    one word ("," for ``a,b``; else the option repeats) and ``registry`` a callable listing the values an open
    set (the policies) offers now (checked where the set is, not here).
    """
    meta = {"lo": lo, "hi": hi, "choices": choices, "help": help, "flag": flag, "aliases": aliases, "env": env,
            "unset": unset, "path": path, "metavar": metavar, "sep": sep, "registry": registry, "owner": None}
    return dataclasses.field(default=default, metadata=meta)


def config_field(cls: type, name: str) -> dataclasses.Field[Any]:
    """The field ``name`` of the config dataclass ``cls`` (ConfigError naming the fields when there is none)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"{cls.__name__} has no field {name!r}; its fields: {', '.join(fields)}")
    return fields[name]


def field_help(cls: type, name: str) -> str:
    """What ``cls.name`` does, for a surface that documents it (the server's request schema): its help, and what
    leaving it unset means."""
    meta = config_field(cls, name).metadata
    unset = meta.get("unset")
    return meta.get("help", "") + (f"; unset: {unset}" if unset else "")


_SAME = object()


def same_as(cls: type, name: str, *, help: str = "", default: Any = _SAME, unset: str | None = None) -> Any:
    """A field that is the setting ``cls.name`` again: its bounds, choices and spelling are that field's (its
    help and default too, unless others are given), and ``owner`` names where it is declared, so a setting
    several configs carry has one declaration."""
    f = config_field(cls, name)
    meta = dict(f.metadata)
    meta["help"] = help or meta.get("help", "")
    if unset is not None:
        meta["unset"] = unset
    meta["owner"] = meta.get("owner") or f"{cls.__name__}.{name}"
    return dataclasses.field(default=f.default if default is _SAME else default, metadata=meta)


def validate(cfg: Any) -> None:
    """Check every field of a config dataclass against its bounds; raise ConfigError on the first miss."""
    name = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{name}.{f.name}={value!r} is not one of {', '.join(map(str, choices))}")
        for item in value if isinstance(value, tuple) else (value,):
            if item is None or isinstance(item, (bool, str)):
                continue
            if lo is not None and item < lo:
                raise ConfigError(f"{name}.{f.name}={value!r} is below its minimum {lo}")
            if hi is not None and item > hi:
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

    n_ctx: int = bounded(4096, lo=16, hi=262144, help="context window in tokens (prompt and answer must fit)")
    n_batch: int = bounded(512, lo=1, hi=65536, help="max tokens per llama_decode call (prefill chunk)")
    n_threads: int = bounded(0, lo=0, hi=1024, flag="--threads", help="CPU threads; 0 = all cores")
    n_gpu_layers: int = bounded(0, lo=-1, hi=10000, help="model layers offloaded to the GPU: 0 = none, -1 = all. "
                                "Needs llama-cpp-python built for CUDA, Metal, Vulkan... (README, \"On a GPU\"); "
                                "a CPU-only build runs everything on the CPU whatever the value")
    extra_buffers: bool = bounded(False, help="llama.cpp extra CPU buffer types (AMX/repack); crash-prone, see docs")
    seed: int = bounded(0, lo=0, hi=2**31 - 1, help="seed of the sampler's random numbers")
    top_logprobs: int = bounded(5, lo=0, hi=64, help="top-k log-probabilities kept per generated token")

    def __post_init__(self) -> None:
        validate(self)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen. temperature 0 means greedy (argmax, ties to the lowest id)."""

    temperature: float = bounded(0.0, lo=0.0, hi=10.0, help="sampling temperature; 0 = greedy")
    top_p: float = bounded(1.0, lo=0.0, hi=1.0, help="nucleus sampling: keep the smallest set of tokens holding "
                           "this probability mass (1 = all)")
    max_tokens: int = bounded(512, lo=1, hi=262144, help="tokens to generate at most")
    stop: tuple[str, ...] = bounded((), help="stop strings (the text is cut before them)")

    def __post_init__(self) -> None:
        validate(self)
