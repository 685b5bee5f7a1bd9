"""``rankguide-edge router``: learn a step router from intervention labels."""

from __future__ import annotations

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
