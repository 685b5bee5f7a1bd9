"""``rankguide-edge router``: learn a step router from intervention labels."""

from __future__ import annotations

import json
import shlex
import sys

import click

from ._common import emit_json, handle_errors


@click.group()
def router() -> None:
    """Learned step routers (from `rankguide-edge label` files)."""


@router.command("fit")
@click.argument("labels", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Router file to write (load it with --router in solve, chat, serve, bench run).")
@click.option("--target", default="gain", show_default=True, type=click.Choice(["gain", "disagree"]),
              help="gain: the LRM's step fixes the answer (counterfactual); disagree: the LRM's check flags the "
                   "step (dense proxy).")
@click.option("--features", default="text,rank,position", show_default=True,
              help="Comma list of feature groups: core, text, rank, fail, position (probe is reported, not "
                   "written).")
@click.option("--l2", default=10.0, show_default=True, type=click.FloatRange(0.0, 1e6),
              help="L2 penalty on standardised weights.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2, 50),
              help="Folds by problem for the held-out AUROC/AUPRC.")
@click.option("--disagree-level", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="disagree target: lrm.risk at or above this.")
@click.option("--target-lrm-share", default=0.45, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Post threshold: the LRM writes about this share of answer tokens on the labelled traces "
                   "(the plan's tokens included).")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write the markdown report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit summary as JSON.")
@handle_errors
def fit(labels: str, out: str, target: str, features: str, l2: float, folds: int, disagree_level: float,
        target_lrm_share: float, report: str | None, as_json: bool) -> None:
    """Fit a logistic step router on LABELS (from `rankguide-edge label`) and write it to OUT.

    Every ablation (text, rank, text+rank, +position, +fail, +probe) is validated on held-out problems and
    judged on "routing helps" (the counterfactual gain is +1): AUROC with a bootstrap interval over problems,
    and AUPRC. The router is then fitted on all steps and its post threshold set for --target-lrm-share."""
    from rankguide_edge.collab.router import save_router
    from rankguide_edge.files import write_text_atomic
    from rankguide_edge.fitting.label import load_labels
    from rankguide_edge.fitting.router_fit import FitConfig, fit_markdown, fit_router

    cfg = FitConfig(target=target, features=tuple(f.strip() for f in features.split(",") if f.strip()), l2=l2,
                    n_folds=folds, disagree_level=disagree_level, target_lrm_share=target_lrm_share)
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


#: the comparison the router issue names: the baselines, the scores on every step, and the first-step levers
DEFAULT_TABLE_POLICIES = ("srm^1,srm^2,control,first-random:0.3,random:0.1,entropy:0.5236,learned,verify:0.9947,"
                          "first-check:0.9947,first-entropy:0.5236,first-learned")


@router.command("eval")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
@click.option("--policies", default=DEFAULT_TABLE_POLICIES, show_default=True,
              help="Comma list of single-intervention policies (NAME[:THRESHOLD]; see below).")
@click.option("--versus", default="srm^1,srm^2,first-random:0.3", show_default=True,
              help="Comma list of policies (among --policies) every policy is paired against.")
@click.option("--router", "router_file", type=click.Path(exists=True, dir_okay=False),
              help="Router file whose weights `learned` policies score with (default: the shipped router).")
@click.option("--chosen-on", default=0, show_default=True, type=click.IntRange(0, 100000),
              help="The first N problems are the ones thresholds were chosen on: report them, the rest and all "
                   "apart.")
@click.option("--baselines", type=click.Path(exists=True),
              help="A bench folder (or its results.jsonl) with `srm` and `lrm` records of the same problems, "
                   "for PGR.")
@click.option("--out", type=click.Path(file_okay=False), help="Write report.md, summary.json and share.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def eval_table(table: str, policies: str, versus: str, router_file: str | None, chosen_on: int,
               baselines: str | None, out: str | None, as_json: bool) -> None:
    """Compare routing policies exactly on a counterfactual TABLE (a label file with counterfactuals on every
    problem: `rankguide-edge label --cf-right-share 1 --max-cf-steps 4 --control`), without running a model.

    A policy routes at most once and its first routed step decides the answer (that step's counterfactual);
    random policies count as their exact expectation. Policies: srm^1 (never route), srm^2 (always the first
    SRM step), control (the SRM re-drafts the first step sampled), first-random:P, random:P, entropy:T,
    learned[:T], verify:T (the first step scoring >= T), first-entropy:T, first-learned[:T], first-check:T (the
    first SRM step only; first-check is the LRM's teacher-forced check of it)."""
    from pathlib import Path

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

    specs = [s.strip() for s in policies.split(",") if s.strip()]
    pols = [parse_policy(s, router=router_file) for s in specs]  # bad specs fail before reading the table
    _, records = load_labels(table)
    problems = table_problems(records)
    base = None
    if baselines:
        p = Path(baselines)
        base = baseline_outcomes(read_records(p / "results.jsonl" if p.is_dir() else p))
    vs = [v.strip() for v in versus.split(",") if v.strip()]
    summary = compare(problems, pols, versus=vs, chosen_on=chosen_on, baselines=base)
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
