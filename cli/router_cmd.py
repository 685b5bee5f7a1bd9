"""``rankguide-edge router``: learn a step router from intervention labels, and compare routers on a
counterfactual table."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import click

from rankguide_edge.collab.reasoner import ReasonerConfig
from rankguide_edge.fitting.policy_table import TableEvalConfig
from rankguide_edge.fitting.router_fit import FitConfig

from ._common import emit_json, handle_errors
from ._settings import pick, setting, settings


@click.group()
def router() -> None:
    """Learned step routers (from `rankguide-edge label` files)."""


@router.command("fit")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Router file to write (load it with --router in solve, chat, serve, bench run).")
@settings(FitConfig, "target", "features", "l2", "n_folds", "disagree_level", "target_lrm_share")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write the markdown report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary as JSON.")
@handle_errors
def fit(labels: str, out: str, report: str | None, as_json: bool, **opts: Any) -> None:
    """Fit a logistic step router on LABELS (from `rankguide-edge label`) and write it to OUT.

    Every ablation (text, rank, text+rank, +position, +fail, +probe) is validated on held-out problems and
    judged on "routing helps" (the counterfactual gain is +1): AUROC with a bootstrap interval over problems,
    and AUPRC. The router is then fitted on all steps and its post threshold set for --target-lrm-share."""
    from rankguide_edge.collab.router import save_router
    from rankguide_edge.config import from_mapping
    from rankguide_edge.files import write_text_atomic
    from rankguide_edge.fitting.label import load_labels
    from rankguide_edge.fitting.router_fit import FitConfig, fit_markdown, fit_router

    cfg = from_mapping(FitConfig, None, **opts)
    header, records = load_labels(labels)
    command = "rankguide-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = fit_router(header, records, cfg, source=labels, command=command)
    save_router(res.router, out)
    text = fit_markdown(res, header)
    if report:
        write_text_atomic(report, text)
    if as_json:
        emit_json(res.to_dict())
    else:
        click.echo(text)
        click.echo(f"wrote {out}")


@router.command("eval")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@settings(TableEvalConfig, "policies", "versus", "chosen_on", "n_boot", "seed")
@setting(ReasonerConfig, "router", note="Its weights are what `learned` policies score.")
@click.option("--baselines", type=click.Path(exists=True),
              help="A bench folder (or its results.jsonl) with `srm` and `lrm` records of the same problems, "
                   "for PGR.")
@click.option("--out", type=click.Path(file_okay=False), help="Write report.md, summary.json and share.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def eval_table(table: str, router: str, baselines: str | None, out: str | None, as_json: bool, **opts: Any) -> None:
    """Compare routing policies exactly on a counterfactual TABLE (a label file with counterfactuals on every
    problem: `rankguide-edge label --cf-right-share 1 --max-cf-steps 4 --control`), without running a model.

    A policy routes at most once and its first routed step decides the answer (that step's counterfactual);
    random policies count as their exact expectation. Policies: srm^1 (never route), srm^2 (always the first
    SRM step), control (the SRM re-drafts the first step sampled), first-random:P, random:P, entropy:T,
    learned[:T], verify:T (the first step scoring >= T), first-entropy:T, first-learned[:T], first-check:T (the
    first SRM step only; first-check is the LRM's teacher-forced check of it)."""
    from pathlib import Path

    from rankguide_edge.config import from_mapping
    from rankguide_edge.files import write_text_atomic
    from rankguide_edge.fitting.label import load_labels
    from rankguide_edge.fitting.policy_table import (
        baseline_outcomes,
        compare,
        compare_markdown,
        parse_policy,
        table_problems,
        write_share_plot,
    )
    from rankguide_edge.jsonl import read_records

    cfg = from_mapping(TableEvalConfig, None, **pick(TableEvalConfig, opts))
    pols = [parse_policy(s, router=router or None) for s in cfg.policy_specs()]  # bad specs fail first
    _, records = load_labels(table)
    problems = table_problems(records)
    base = None
    if baselines:
        p = Path(baselines)
        base = baseline_outcomes(read_records(p / "results.jsonl" if p.is_dir() else p))
    summary = compare(problems, pols, versus=cfg.versus_specs(), chosen_on=cfg.chosen_on, baselines=base,
                      n_boot=cfg.n_boot, seed=cfg.seed)
    command = "rankguide-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = compare_markdown(summary, command=command)
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        write_text_atomic(d / "report.md", text)
        write_text_atomic(d / "summary.json", json.dumps(summary, indent=2) + "\n")
        why = write_share_plot(summary, d / "share.png")
        if why:
            click.echo(f"share.png not written: {why}", err=True)
    if as_json:
        emit_json(summary)
    else:
        click.echo(text)
