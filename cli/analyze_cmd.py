"""``rankguide-edge analyze``: which step signals of a trace file predict a wrong final answer."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import emit_json, handle_errors


@click.command("analyze")
@click.argument("traces", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for analysis.json, report.md, roc.png and trajectories.png (created).")
@click.option("--strict", is_flag=True, help="Stop at the first malformed line instead of skipping it.")
@click.option("--min-traces", type=click.IntRange(4, None), default=None,
              help="Fewer usable traces is an error.  [default: 10]")
@click.option("--bootstrap", type=click.IntRange(20, 100_000), default=None,
              help="Bootstrap resamples for the 95% CIs.  [default: 500]")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None,
              help="Seed of the bootstrap and of the CV folds.  [default: 0]")
@click.option("--threshold", "thresholds", type=float, multiple=True,
              help="Absolute fail.* threshold for the first-crossing features (repeatable); default: each "
                   "score's pooled median and 75th percentile.")
@click.option("--no-plots", "--no-plot", "no_plots", is_flag=True, help="Skip roc.png and trajectories.png.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON digest (the full result is analysis.json).")
@handle_errors
def analyze(traces: Path, out_dir: Path, strict: bool, min_traces: int | None, bootstrap: int | None,
            seed: int | None, thresholds: tuple[float, ...], no_plots: bool, as_json: bool) -> None:
    """Measure, for every signal in TRACES.jsonl (written by `rankguide-edge trace`), how well it predicts
    that the small model ends wrong: AUROC with bootstrap CIs, on finished traces only and within length
    strata, plus fail.route vs entropy and cross-validated logistic regressions. Writes into --out."""
    from rankguide_edge.config import from_mapping
    from rankguide_edge.fitting.analyze import AnalyzeConfig
    from rankguide_edge.fitting.analyze import analyze as run_analyze

    cfg = from_mapping(AnalyzeConfig, None, min_traces=min_traces, bootstrap=bootstrap, seed=seed,
                       thresholds=thresholds or None, strict=strict or None, plots=False if no_plots else None)
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
