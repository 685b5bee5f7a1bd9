"""``rankguide-edge router``: learn a step router from intervention labels."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from rankguide_edge.evaluation.router_fit import FitConfig

from ._common import emit_json, handle_errors
from ._settings import settings


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
    from rankguide_edge.evaluation.label import load_labels
    from rankguide_edge.evaluation.router_fit import fit_markdown, fit_router
    from rankguide_edge.files import write_text_atomic

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
