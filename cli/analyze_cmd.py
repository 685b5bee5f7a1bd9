"""``rankguide-edge analyze``: which step signals of a trace file predict a wrong final answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rankguide_edge.fitting.analyze import AnalyzeConfig

from ._common import emit_json, handle_errors
from ._settings import settings


@click.command("analyze")
@click.argument("traces", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for analysis.json, report.md, roc.png and trajectories.png (created).")
@settings(AnalyzeConfig, "strict", "min_traces", "bootstrap", "seed", "thresholds", "plots")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON digest (the full result is analysis.json).")
@handle_errors
def analyze(traces: Path, out_dir: Path, as_json: bool, **opts: Any) -> None:
    """Measure, for every signal in TRACES.jsonl (written by `rankguide-edge trace`), how well it predicts
    that the small model ends wrong: AUROC with bootstrap CIs, on finished traces only and within length
    strata, plus fail.route vs entropy and cross-validated logistic regressions. Writes into --out."""
    from rankguide_edge.config import from_mapping
    from rankguide_edge.fitting.analyze import analyze as run_analyze

    cfg = from_mapping(AnalyzeConfig, None, **opts)
    res = run_analyze(traces, out_dir, config=cfg)
    if res.counts["malformed"]:
        first = f"; first: {res.warnings[0]}" if res.warnings else ""
        click.echo(f"warning: skipped {res.counts['malformed']} malformed line(s){first}", err=True)
    for note in res.plot_notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        emit_json(res.summary())
        return
    for line in res.reading:
        click.echo(f"- {line}")
    click.echo(f"wrote {', '.join(res.files.values())} ({res.seconds:.1f} s)")
