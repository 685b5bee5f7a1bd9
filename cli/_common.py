"""What every command shares: turning library errors into one-line messages and exit codes, and the option
groups several commands declare (generated from config fields by :mod:`._settings`)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rankguide_edge.errors import RankGuideError

from ._settings import setting

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Run a command; a RankGuideError becomes ``error: <message>`` on stderr and its class's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RankGuideError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def emit_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (one-line ConfigError on failure)."""
    from rankguide_edge.files import read_mapping

    return read_mapping(path, "config file")


def steer_options() -> list[Callable[[F], F]]:
    """``--steer/--steer-scale/--steer-where`` (``ReasonerConfig``'s), shared by solve, chat and trace (bench
    declares named vectors, ``--steer NAME=FILE``, and each method its scale and place: ``srm+NAME*0.25/boundary``)."""
    from rankguide_edge.collab.reasoner import ReasonerConfig

    return [setting(ReasonerConfig, name) for name in ("steer", "steer_scale", "steer_where")]


def dataset_options(note: str = "", *, required: bool = True) -> list[Callable[[F], F]]:
    """``--data/--limit/--offset/--kind/--on-error`` and the generic-JSONL field names: which problems a
    dataset command (trace, label, bench run, steer extract) works on; the fields of
    :class:`~rankguide_edge.tasks.datasets.DatasetConfig` (build it with ``pick``)."""
    from rankguide_edge.tasks.datasets import DatasetConfig

    return [setting(DatasetConfig, "path", note=note, required=required),
            *(setting(DatasetConfig, name) for name in ("limit", "offset", "kind", "on_error", "question_field",
                                                         "answer_field", "id_field"))]


def remote_lrm_options() -> list[Callable[[F], F]]:
    """``--lrm-model/--lrm-api-key/--lrm-timeout/--lrm-retries``: how to talk to an OpenAI-compatible LRM (solve,
    chat, bench run), RemoteConfig's fields; ignored when --lrm is a model name or GGUF path."""
    from rankguide_edge.collab.backends_remote import RemoteConfig
    from rankguide_edge.collab.lrm import RemoteOptions

    return [setting(RemoteConfig, "model", prefix="lrm"), setting(RemoteOptions, "api_key", prefix="lrm"),
            setting(RemoteConfig, "timeout", prefix="lrm"), setting(RemoteConfig, "retries", prefix="lrm")]


def apply_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply a list of click options as one decorator (first option listed first in --help)."""

    def deco(fn: F) -> F:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco
