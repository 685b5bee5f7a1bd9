"""What every command shares: turning library errors into one-line messages and exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rankguide_edge.errors import RankGuideError

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
    """``--steer/--steer-scale/--steer-where``, shared by solve, chat and trace (bench declares named vectors,
    ``--steer NAME=FILE``, and each method its scale and place: ``srm+NAME*0.25/boundary``)."""
    return [
        click.option("--steer", default=None, type=click.Path(exists=True, dir_okay=False),
                     help="Steer the SRM with this control-vector .gguf (from `rankguide-edge steer extract`, "
                          "llama.cpp's cvector-generator or repeng)."),
        click.option("--steer-scale", default=1.0, show_default=True, type=click.FloatRange(-64.0, 64.0),
                     help="Multiplier of the steering vector (0 = no effect)."),
        click.option("--steer-where", default="all", show_default=True, type=click.Choice(["all", "boundary"]),
                     help="Add the vector on every token, or only on generated step-delimiter tokens."),
    ]


def gpu_option(default: int | None = 0) -> Callable[[F], F]:
    """``--n-gpu-layers N`` (every command that loads a model): ``RuntimeConfig.n_gpu_layers``. ``default``
    None leaves the value to a config file (serve)."""
    shown = "" if default is not None else "  [default: 0]"
    return click.option("--n-gpu-layers", "n_gpu_layers", default=default, show_default=default is not None,
                        type=click.IntRange(-1, 10000),
                        help="Model layers offloaded to the GPU: 0 = none, -1 = all. Needs llama-cpp-python "
                             "built for CUDA, Metal, Vulkan... (README, \"On a GPU\"); a CPU-only build runs "
                             "everything on the CPU whatever the value." + shown)


def dataset_options(data_help: str) -> list[Callable[[F], F]]:
    """``--data/--limit/--offset/--kind/--on-error`` and the generic-JSONL field names: which problems a
    dataset command (trace, label, bench run) works on; the values go to
    :class:`~rankguide_edge.tasks.datasets.DatasetConfig`."""
    return [
        click.option("--data", required=True, help=data_help),
        click.option("--limit", type=click.IntRange(1), help="Use at most this many problems (file order)."),
        click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Skip this many records."),
        click.option("--kind", default="auto", show_default=True,
                     type=click.Choice(["auto", "gsm8k", "math", "math500", "svamp", "generic"]),
                     help="Record format and answer kind (auto: detected from the first record)."),
        on_error_option(),
        *field_options(),
    ]


def field_options() -> list[Callable[[F], F]]:
    """``--question-field/--answer-field/--id-field``: field names of a generic JSONL dataset (trace, bench run,
    steer extract); the values go to :class:`~rankguide_edge.tasks.datasets.DatasetConfig`."""
    return [
        click.option("--question-field", default=None, metavar="NAME",
                     help="Field holding the question in a generic JSONL file.  [default: question, problem, "
                          "prompt or input]"),
        click.option("--answer-field", default=None, metavar="NAME",
                     help="Field holding the gold answer.  [default: answer, gold, target or output]"),
        click.option("--id-field", default=None, metavar="NAME",
                     help="Field holding the record id (resume key).  [default: id, else file and line]"),
    ]


def remote_lrm_options() -> list[Callable[[F], F]]:
    """``--lrm-model/--lrm-api-key/--lrm-timeout/--lrm-retries``: how to talk to an OpenAI-compatible LRM (solve,
    chat, bench run); ignored when --lrm is a model name or GGUF path. Defaults and bounds are RemoteConfig's."""
    from rankguide_edge.collab.backends_remote import MAX_RETRY_WAIT, RemoteConfig
    from rankguide_edge.config import field_bounds

    timeout, t_lo, t_hi = field_bounds(RemoteConfig, "timeout")
    retries, r_lo, r_hi = field_bounds(RemoteConfig, "retries")
    backoff = field_bounds(RemoteConfig, "backoff")[0]
    return [
        click.option("--lrm-model", default=None, help="Model name to send to a remote LRM."),
        click.option("--lrm-api-key", default=None, envvar="RANKGUIDE_EDGE_LRM_API_KEY",
                     help="API key of a remote LRM (or $RANKGUIDE_EDGE_LRM_API_KEY)."),
        click.option("--lrm-timeout", default=timeout, show_default=True, type=click.FloatRange(t_lo, t_hi),
                     help="Seconds per attempt of a call to a remote LRM (connect, send, each read)."),
        click.option("--lrm-retries", default=retries, show_default=True, type=click.IntRange(r_lo, r_hi),
                     help="Retries of a remote LRM call after a connection error, timeout, 429 or 5xx; each "
                          f"waits the server's Retry-After (at most {MAX_RETRY_WAIT:g} s), else a backoff "
                          f"doubling from {backoff:g} s. The connection is kept alive between calls."),
    ]


def on_error_option() -> Callable[[F], F]:
    """``--on-error stop|skip``: what a malformed dataset record does (trace, bench run, steer extract)."""
    return click.option("--on-error", default="stop", show_default=True, type=click.Choice(["stop", "skip"]),
                        help="A malformed dataset record stops the run, or is skipped with a warning.")


def apply_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply a list of click options as one decorator (first option listed first in --help)."""

    def deco(fn: F) -> F:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco
