"""Click options generated from the typed configs' fields, so that a setting is declared once: at its field.

A command names the fields it exposes; the option's name, default, bounds, choices and help all come from the
field (``rankguide_edge.config.bounded`` and its metadata)::

    @settings(TraceConfig, "layers", "max_tokens", "temperature", "seed", "n_ctx", "n_threads")
    @setting(RuntimeConfig, "n_gpu_layers")
    @setting(RuntimeConfig, "n_ctx", default=2048)          # a command-specific default, said in one line

The option is ``--field-name`` (or the field's ``flag``, its historic spelling: ``n_threads`` is ``--threads``)
and its value arrives under the field's name, so ``from_mapping(Cls, None, **pick(Cls, opts))`` builds the
config. ``prefix="lrm"`` spells another object's fields (``RemoteConfig.timeout`` as ``--lrm-timeout``,
arriving as ``lrm_timeout``) and ``flag="--trace-layers"`` one field under another name (arriving as
``trace_layers``); ``file="--config"`` leaves the value to a config file when the option is not
given (the option's default is then None and its help says which value applies); ``note`` adds what the
setting means for this one command. Bools become ``--x/--no-x`` flags; a field whose value may be None (or
"") keeps None as the option's default, and its help says what that means (the field's ``unset``).

Every option made here is a :class:`FieldOption`, which remembers its field: ``tests/test_cli_settings.py``
walks the command tree and checks each against the field it came from.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from rankguide_edge.config import config_field

F = TypeVar("F", bound=Callable[..., Any])

#: "no override": the option's default is the field's
FIELD: Any = object()


class FieldOption(click.Option):
    """A click option generated from ``config``'s field ``field_name`` (``override``: the command's own default,
    else :data:`FIELD`; ``file``: the option that may supply the value instead, if any)."""

    def __init__(self, *args: Any, config: type, field_name: str, override: Any, file: str | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config, self.field_name, self.override, self.file = config, field_name, override, file


class CommaList(click.ParamType):
    """A tuple written as one word, ``1,2,4`` (each item converted and bounded by ``item``)."""

    name = "list"

    def __init__(self, item: click.ParamType, sep: str, what: str) -> None:
        self.item, self.sep, self.what = item, sep, what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(self.sep) if p.strip()]
        try:
            if parts:
                return tuple(self.item.convert(p, param, ctx) for p in parts)
        except click.BadParameter:
            pass
        example = "1,2,4" if "integer" in self.what else "a,b"
        self.fail(f"{value!r} is not a comma list of {self.what}, e.g. {example}", param, ctx)


def _value_type(annotation: Any) -> Any:
    """The type of a field's values besides None: ``int | None`` -> ``int``."""
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return annotation


def _scalar_type(kind: Any, meta: Mapping[str, Any]) -> click.ParamType:
    lo, hi = meta.get("lo"), meta.get("hi")
    if kind is int:
        return click.IntRange(lo, hi) if lo is not None or hi is not None else click.INT
    if kind is float:
        return click.FloatRange(lo, hi) if lo is not None or hi is not None else click.FLOAT
    choices = meta.get("choices")
    if meta.get("registry") is not None:
        choices = meta["registry"]()
    if choices is not None:  # None, where a choice, is the option not given
        return click.Choice([str(c) for c in choices if c is not None])
    if meta.get("path") == "file":
        return click.Path(exists=True, dir_okay=False)
    if meta.get("path") == "dir":
        return click.Path(exists=True, file_okay=False)
    return click.STRING


def _items(kind: Any, meta: Mapping[str, Any]) -> str:
    """What the items of a comma list are, for its error message."""
    if kind is int:
        return "positive integers" if meta.get("lo") == 1 else "integers"
    return "numbers" if kind is float else "names"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def _shown(value: Any, sep: str | None) -> str:
    if isinstance(value, tuple):
        return (sep or ", ").join(map(str, value))
    return str(value) if str(value).isprintable() else repr(value)


def setting(config: type, name: str, *, default: Any = FIELD, flag: str | None = None, prefix: str | None = None,
            note: str = "", file: str | None = None, required: bool = False) -> Callable[[F], F]:
    """The click option of ``config``'s field ``name`` (see the module docstring for the keywords)."""
    f = config_field(config, name)
    meta = f.metadata
    if "help" not in meta:
        raise TypeError(f"{config.__name__}.{name} is not a bounded() field: it has no help to show")
    kind = _value_type(typing.get_type_hints(config)[name])
    if flag is not None:
        primary, param = flag, flag.lstrip("-").replace("-", "_")
    elif prefix is not None:
        primary, param = f"--{prefix}-{name.replace('_', '-')}", f"{prefix}_{name}"
    else:
        primary, param = meta.get("flag") or "--" + name.replace("_", "-"), name
    aliases = tuple(meta.get("aliases") or ()) if flag is None and prefix is None else ()
    value = f.default if default is FIELD else default
    if value is dataclasses.MISSING:
        raise TypeError(f"{config.__name__}.{name} has no default")
    sep = meta.get("sep")
    kwargs: dict[str, Any] = {}
    if kind is bool:
        decls = [f"{primary}/--no-{primary[2:]}", *(f" /{a}" if a.startswith("--no-") else a for a in aliases)]
        kwargs["is_flag"] = True
    else:
        decls = [primary, *aliases]
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            if sep:
                kwargs["type"] = CommaList(_scalar_type(item, meta), sep, _items(item, meta))
            else:
                kwargs.update(type=_scalar_type(item, meta), multiple=True)
        else:
            kwargs["type"] = _scalar_type(kind, meta)
    text = _sentence(meta.get("help", ""))
    if note:
        text += " " + _sentence(note)
    unset = meta.get("unset")
    if file is not None:  # the file's value, else the field's (or the command's) default
        shown = unset if value is None or value == "" else _shown(value, sep)
        text += f"  [default: {name} of {file}" + (f", else {shown}]" if shown else "]")
        cli_default, show_default = None, False
    elif value is None or value == "" or value == ():
        text += f"  [default: {unset}]" if unset else ""
        cli_default, show_default = (() if value == () else None), False
    else:
        cli_default = sep.join(map(str, value)) if sep and isinstance(value, tuple) else value
        show_default = True
    if meta.get("env"):
        kwargs.update(envvar=meta["env"], show_envvar=True)
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    return click.option(*decls, param, cls=FieldOption, config=config, field_name=name, override=default,
                        file=file, default=cli_default, show_default=show_default, required=required, help=text,
                        **kwargs)


def settings(config: type, *names: str, prefix: str | None = None, file: str | None = None,
             **defaults: Any) -> Callable[[F], F]:
    """The options of several fields of ``config``, in the order given; ``defaults`` are the command's own
    defaults by field name (``settings(RuntimeConfig, "n_ctx", "n_threads", n_ctx=2048)``)."""
    unknown = sorted(set(defaults) - set(names))
    if unknown:
        raise TypeError(f"defaults for fields not listed: {', '.join(unknown)}")
    options = [setting(config, n, default=defaults.get(n, FIELD), prefix=prefix, file=file) for n in names]

    def deco(fn: F) -> F:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


def pick(config: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` (a command's options) that are fields of ``config``."""
    names = {f.name for f in dataclasses.fields(config)}
    return {k: v for k, v in values.items() if k in names}
